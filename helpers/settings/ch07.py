"""Chapter 7 (interpreting a CNN): settings per profile and what defines its checkpoint."""

# VGG-16 of ch. 6 (cpu/full: its architecture, so ch. 6's checkpoint loads); smoke/cpu: narrow, BatchNorm in
# the conv slots, Adam.
# Grad-CAM at features.15 (8x8 on 32x32 inputs; features.29 is 2x2). failing: the too-high-lr demo.
COMMON = dict(val_fraction=0.1, cam_layer="features.15", check_layers=("features.29", "features.22", "features.15"),
              activation_layers=("features.1", "features.8", "features.15", "features.22", "features.29"),
              explore_layers=("features.8", "features.15", "features.22", "features.29"),
              filter_layers=("features.2", "features.28"), n_filters=8, occlusion_patches=(4, 8),
              occlusion_strides=(2, 4), shown_per_kind=4, check_patch=8, failing=dict(lr=0.01))

OVERRIDES = {
    "smoke": dict(train_size=6000, test_size=500, width=0.125, hidden=64, dropout=0.0, batchnorm=True,
                  augment=False, optimizer="adam", lr=1e-3, weight_decay=0.0, batch_size=32, epochs=6,
                  schedule="cosine", step_size=None, patience=None, monitor_epochs=3, filter_steps=60,
                  check_images=100, eval_batch=100, imagenet=False, failing=dict(epochs=2, train_size=1500)),
    "cpu": dict(train_size=10000, test_size=1000, width=0.25, hidden=512, dropout=0.5, batchnorm=True,
                augment=True, optimizer="adam", lr=1e-3, weight_decay=0.0, batch_size=64, epochs=12,
                schedule="cosine", step_size=None, patience=None, monitor_epochs=3, filter_steps=100,
                check_images=500, eval_batch=250, imagenet=False, failing=dict(epochs=2, train_size=2000)),
    "full": dict(train_size=None, test_size=None, width=1.0, hidden=4096, dropout=0.5, batchnorm=False,
                 augment=True, optimizer="sgd", lr=0.01, weight_decay=5e-4, batch_size=128, epochs=200,
                 schedule="step", step_size=50, patience=20, monitor_epochs=5, filter_steps=200,
                 check_images=1000, eval_batch=100, imagenet=True, failing=dict(epochs=3, train_size=10000)),
}

# The chapter's own VGG-16, trained when chapter 6's is missing (chapter 6's is found through
# helpers/settings/ch06.py). The monitored and the failing runs are short and not checkpointed.
CHECKPOINTS = {
    "vgg16": ("train_size", "val_fraction", "width", "hidden", "dropout", "batchnorm", "augment", "optimizer",
              "lr", "weight_decay", "batch_size", "epochs", "schedule", "step_size", "patience"),
}

# How `make notebooks` records this chapter (stand-ins until a recording on
# the real CIFAR-10 is checked against the chapter's tests);
# loads: the datasets whose sizes the provenance line gives.
RECORDING = dict(profile="smoke", data="standin", loads=("cifar10",))
