"""Chapter 6 (VGG-16 and the separation index): settings per profile and what defines its checkpoints."""

# Full = the original: CIFAR-10 (10% stratified validation, seed 42), VGG-16 at full width, SGD lr 0.01
# momentum 0.9 weight decay 5e-4, batch 128, StepLR(50, 0.1), up to 200 epochs, early stopping after 20
# epochs without a better validation accuracy; SI on 10% of train (5,000) and test (1,000; stratified
# here, random in the original); cut after module 23; heads of 4,096 with dropout 0.2. The frozen
# classifier reuses the recipe, as in the original; the heads reuse it too, this book's choice (the
# original trained them with Adam, lr 1e-3, for 6 epochs).
# Smoke/cpu: a narrow VGG-16 without normalisation barely leaves chance in a few CPU epochs, so each
# conv slot also holds a BatchNorm2d (same 31 modules, as in chapter 7) and the optimiser is Adam (no weight
# decay). single_feature_sample: single features whose SI checks the ranking curve's first point.
COMMON = dict(val_fraction=0.1, split_seed=42, cut=23, head_dropout=0.2)

OVERRIDES = {
    "smoke": dict(train_size=3000, test_size=500, batch_size=32, eval_batch=256, width=0.125, hidden=128,
                  dropout=0.0, batchnorm=True, optimizer="adam", lr=1e-3, weight_decay=0.0, step_size=6,
                  epochs=8, patience=20, frozen_epochs=4, si_train=400, si_test=200, exact_check_samples=120,
                  exact_check_features=10, head_hidden=128, head_epochs=6, cache_features=True,
                  single_feature_sample=256),
    "cpu": dict(train_size=10000, test_size=2000, batch_size=64, eval_batch=512, width=0.25, hidden=512,
                dropout=0.5, batchnorm=True, optimizer="adam", lr=1e-3, weight_decay=0.0, step_size=20,
                epochs=30, patience=8, frozen_epochs=15, si_train=2000, si_test=500, exact_check_samples=200,
                exact_check_features=12, head_hidden=1024, head_epochs=15, cache_features=True,
                single_feature_sample=128),
    "full": dict(train_size=None, test_size=None, batch_size=128, eval_batch=512, width=1.0, hidden=4096,
                 dropout=0.5, batchnorm=False, optimizer="sgd", lr=0.01, weight_decay=5e-4, step_size=50,
                 epochs=200, patience=20, frozen_epochs=200, si_train=5000, si_test=1000,
                 exact_check_samples=200, exact_check_features=12, head_hidden=4096, head_epochs=200,
                 cache_features=False, single_feature_sample=64),
}

# The frozen classifier and the compressed heads sit on the trained VGG-16, so its settings define them
# too; the compressed trunk keeps the features ranked on si_train at the cut (k is in the name).
# Chapter 7 loads "vgg16" through this declaration. eval_batch, test sizes and checks only evaluate.
VGG16 = ("train_size", "val_fraction", "split_seed", "batch_size", "width", "hidden", "dropout", "batchnorm",
         "optimizer", "lr", "weight_decay", "step_size", "epochs", "patience")
CHECKPOINTS = {
    "vgg16": VGG16,
    "vgg16-frozen": (*VGG16, "frozen_epochs", "cache_features"),
    "compressed-*": (*VGG16, "si_train", "cut", "head_hidden", "head_dropout", "head_epochs", "cache_features"),
}

# How `make notebooks` records this chapter (stand-ins until a recording on
# the real CIFAR-10 is checked against the chapter's tests);
# loads: the datasets whose sizes the provenance line gives.
RECORDING = dict(profile="smoke", data="standin", loads=("cifar10",))
