"""Chapter 2 (dropout and regularisation): settings per profile; it trains in seconds and keeps no checkpoints."""

# The original answered chapter 2's questions on paper: the widths 4, 256 and about a million (full) of
# capacity_hidden are its numbers; every other setting is this book's choice.
COMMON = dict(points=300, sweep_coefficients=(0.0, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3), noise_features=(0, 20, 100))

OVERRIDES = {
    "smoke": dict(capacity_hidden=(4, 256, 8_192), capacity_epochs=200, sweep_epochs=200,
                  digits_train=300, digits_val=500, digits_epochs=60),
    "cpu": dict(capacity_hidden=(4, 256, 65_536), capacity_epochs=300, sweep_epochs=300,
                digits_train=600, digits_val=1000, digits_epochs=80),
    "full": dict(capacity_hidden=(4, 256, 1_048_576), capacity_epochs=500, sweep_epochs=400,
                 digits_train=600, digits_val=1000, digits_epochs=100),
}

CHECKPOINTS: dict[str, tuple[str, ...]] = {}

# How `make notebooks` records this chapter (the real MNIST in cpu: full's
# million-unit capacity run takes over 10 minutes on a CPU);
# loads: the datasets whose sizes the provenance line gives.
RECORDING = dict(profile="cpu", data="real", loads=("mnist",))
