"""Chapter 1 (MLP and backpropagation on MNIST): settings per profile and what defines its checkpoints."""

# Full: the original's grid at its scale (all of MNIST, 30 epochs, batch 128, SGD lr 0.1). The original used
# plain SGD and Adam, both at lr 0.1; this book's choices: SGD momentum 0.9 (set in the notebook), Adam lr
# 1e-3, a stratified 20% validation split and early stopping (patience).
COMMON = dict(batch_size=128, sgd_lr=0.1, adam_lr=1e-3, deep_layers=10)

OVERRIDES = {
    "smoke": dict(train_size=4000, test_size=1000, epochs=20, patience=4),
    "cpu": dict(train_size=12000, test_size=2000, epochs=15, patience=5),
    "full": dict(train_size=None, test_size=None, epochs=30, patience=5),
}

# Every checkpoint is one MLP of the grid (its activation, loss and optimiser are in the name);
# deep_layers only sizes the step-size demonstration, which is never trained.
CHECKPOINTS = {
    "*": ("train_size", "batch_size", "epochs", "patience", "sgd_lr", "adam_lr"),
}

# How `make notebooks` records this chapter (the real MNIST in full: about 5 minutes on a 2-core CPU);
# loads: the datasets whose sizes the provenance line gives.
RECORDING = dict(profile="full", data="real", loads=("mnist",))
