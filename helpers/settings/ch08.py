"""Chapter 8 (ablation studies): settings per profile and what defines its checkpoints."""

# simple: SimpleNet on CIFAR-10 (full: the original's SGD lr 0.001, batch 64, 5 epochs; the original used no
# momentum, 0.9 is this book's choice); smoke: fewer steps, so a larger lr.
# recipe: ch. 3's recipe on SVHN (ResNet-18, 10 epochs); lr None = ch. 3's defaults. Seeds per variant: n_seeds.
# Smoke recipe: batch 16 and moderate lrs make the BatchNorm variants learn on every seed in 3 epochs;
# without BatchNorm the ResNet stays on its initial plateau in any budget that fits the smoke profile.
COMMON = dict(label_smoothing=0.25, channel_fractions=(0.25, 0.5, 0.75),
              simple=dict(epochs=5, batch=64, momentum=0.9))

OVERRIDES = {
    "smoke": dict(n_seeds=2, eval_batch=256,
                  simple=dict(train=1600, test=1000, channels=16, lr=0.01),
                  recipe=dict(train=900, val_fraction=0.2, test=400, epochs=3, width=0.0625, batch=16,
                              sgd_lr=0.02, adam_lr=3e-3)),
    "cpu": dict(n_seeds=2, eval_batch=512,
                simple=dict(train=10000, test=2000, channels=64, lr=0.001),
                recipe=dict(train=6000, val_fraction=0.1, test=2000, epochs=5, width=0.25, batch=128,
                            sgd_lr=None, adam_lr=None)),
    "full": dict(n_seeds=3, eval_batch=1024,
                 simple=dict(train=None, test=None, channels=64, lr=0.001),
                 recipe=dict(train=None, val_fraction=0.1, test=None, epochs=10, width=1.0, batch=128,
                             sgd_lr=None, adam_lr=None)),
}

# Only the recipe runs are checkpointed ("recipe-<key>", the key hashing the variant, seed and code);
# the SimpleNet runs take seconds and live in the ablation cache.
CHECKPOINTS = {
    "recipe-*": ("recipe.train", "recipe.val_fraction", "recipe.width", "recipe.batch", "recipe.epochs",
                 "recipe.sgd_lr", "recipe.adam_lr", "label_smoothing"),
}

# How `make notebooks` records this chapter (no SVHN is at hand, so the stand-ins);
# loads: the datasets whose sizes the provenance line gives.
RECORDING = dict(profile="smoke", data="standin", loads=("cifar10", "svhn", "mnist"))
