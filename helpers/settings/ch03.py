"""Chapter 3 (a robust ResNet-18, SVHN to MNIST): settings per profile and what defines its checkpoints."""

# Full: the original's scale where its report states it: the whole SVHN training set, SVHN and MNIST test
# sets, ResNet-18, SGD with momentum, 10 epochs, label smoothing 0.25, the affine augmentation, few-label
# transfer on 1,000 labelled SVHN images. Not in the report, so this book's choices: the 10% stratified
# validation split, full width, batch 128, SGD lr 0.01, momentum 0.9, weight decay 5e-4, cosine decay,
# Adam lr 1e-3 and the head_*/adabn_* settings. None = the whole split.
# Smoke: far fewer steps, so larger learning rates and smaller batches; pretrained_* only apply if the
# ImageNet weights happen to be cached (they are never downloaded offline).
COMMON = dict(head_epochs=30)

OVERRIDES = {
    "smoke": dict(svhn_train=1000, mnist_train=800, test_size=500, val_fraction=0.15, width=0.125,
                  epochs=5, batch_size=32, sgd_lr=0.03, adam_lr=3e-3, few_label=500,
                  head_lr=1e-2, adabn_size=500, pretrained_train=256, pretrained_epochs=1,
                  pretrained_in_best=False),
    "cpu": dict(svhn_train=10000, mnist_train=10000, test_size=2000, val_fraction=0.1, width=0.25,
                epochs=5, batch_size=128, sgd_lr=0.05, adam_lr=1e-3, few_label=1000,
                head_lr=1e-3, adabn_size=5000, pretrained_train=2000, pretrained_epochs=2,
                pretrained_in_best=False),
    "full": dict(svhn_train=None, mnist_train=None, test_size=None, val_fraction=0.1, width=1.0,
                 epochs=10, batch_size=128, sgd_lr=0.01, adam_lr=1e-3, few_label=1000,
                 head_lr=1e-3, adabn_size=10000, pretrained_train=None, pretrained_epochs=10,
                 pretrained_in_best=True),
}

# One checkpoint per row of the table (the recipe is in the name). The pretrained row trains at full
# width for pretrained_epochs; the reverse row trains on MNIST. The few-label head is not checkpointed.
RECIPE = ("val_fraction", "width", "epochs", "batch_size", "sgd_lr", "adam_lr")
CHECKPOINTS = {
    **dict.fromkeys(("baseline", "nobn", "ls", "aug", "adam"), ("svhn_train", *RECIPE)),
    "pretrained": ("svhn_train", "val_fraction", "batch_size", "sgd_lr", "pretrained_train", "pretrained_epochs"),
    "reverse": ("mnist_train", *RECIPE, "pretrained_in_best"),
}

# How `make notebooks` records this chapter (no SVHN is at hand, so the stand-ins);
# loads: the datasets whose sizes the provenance line gives.
RECORDING = dict(profile="smoke", data="standin", loads=("svhn", "mnist"))
