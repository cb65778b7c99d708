"""Chapter 4 (adversarial examples and training): settings per profile and what defines its checkpoints."""

# Full: the original's scale where its report states it: CIFAR-10, ResNet-18, Adam, up to 16 epochs with
# early stopping, FGSM eps=0.1 + Gaussian noise sigma=0.01 (its noise function's default), and each
# training batch made adversarial with probability 0.5. This book's choices: CIFAR-10's own test set and
# a 10% stratified validation split (the original split its data 80/20 into train/test and held out 20%
# of train), full width, Adam lr 1e-3, batch 128, patience 3 on the validation loss, and eps=0.1 also in
# adversarial training (the report states eps for its test attack only).
# Smoke: the tiny network cannot learn to resist eps=0.1 on the stand-in in a few CPU epochs, so
# it uses eps=0.03 (about the literature's 8/255) for the attack and the adversarial training.
COMMON = dict(val_fraction=0.1, patience=3, sigma=0.01, p_adversarial=0.5,
              slider_eps=(0.0, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2))

OVERRIDES = {
    "smoke": dict(train_size=2000, test_size=500, width=0.125, batch_size=32, lr=2e-3, epochs=8, eps=0.03,
                  curve_eps=(0.0, 0.01, 0.03, 0.06), curve_size=150, pgd_steps=5, embed_size=200,
                  embedding="pca", slider_static=(0.0, 0.01, 0.03, 0.1)),
    "cpu": dict(train_size=5000, test_size=1000, width=0.25, batch_size=64, lr=1e-3, epochs=12, eps=0.1,
                curve_eps=(0.0, 2 / 255, 4 / 255, 8 / 255, 0.05, 0.1), curve_size=500, pgd_steps=10,
                embed_size=1000, embedding="auto", slider_static=(0.0, 0.02, 0.05, 0.1)),
    "full": dict(train_size=None, test_size=None, width=1.0, batch_size=128, lr=1e-3, epochs=16, eps=0.1,
                 curve_eps=(0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 0.05, 0.1), curve_size=2000,
                 pgd_steps=10, embed_size=2000, embedding="auto", slider_static=(0.0, 0.02, 0.05, 0.1)),
}

# The noise sigma only enters the evaluation attack, not the FGSM batches of adversarial training.
RESNET = ("train_size", "val_fraction", "width", "batch_size", "lr", "epochs", "patience")
CHECKPOINTS = {
    "baseline": RESNET,
    "advtrained": (*RESNET, "eps", "p_adversarial"),
}

# How `make notebooks` records this chapter (stand-ins until a recording on
# the real CIFAR-10 is checked against the chapter's tests);
# loads: the datasets whose sizes the provenance line gives.
RECORDING = dict(profile="smoke", data="standin", loads=("cifar10",))
