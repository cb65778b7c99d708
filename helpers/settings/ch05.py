"""Chapter 5 (circle loss and embeddings): settings per profile and what defines its checkpoints."""

# The original: Adam lr 1e-3, 25 epochs (full), 5-NN, FGSM eps=0.1 plus noise. Its m = gamma = 65 make
# circle loss identically 0 (chapter 5), so m and gamma are this book's choice (picked by the smoke
# sweep), as are the reduction, the embedding size, the batch sizes and the sweep.
COMMON = dict(lr=1e-3, m=0.25, gamma=2.0, reduction="anchor", k=5, eps=0.1, sigma=0.01,
              sweep=((0.25, 256.0), (0.25, 80.0), (0.4, 80.0), (0.25, 2.0)))

OVERRIDES = {
    "smoke": dict(train_size=2000, test_size=500, width=0.125, embedding_dim=64, epochs=8, batch_size=32,
                  sweep_train_size=1000, sweep_val_fraction=0.2, sweep_epochs=6, projection="pca",
                  plot_points=500),
    "cpu": dict(train_size=5000, test_size=1000, width=0.25, embedding_dim=128, epochs=10, batch_size=64,
                sweep_train_size=2000, sweep_val_fraction=0.1, sweep_epochs=6, projection="auto",
                plot_points=1000),
    "full": dict(train_size=None, test_size=None, width=1.0, embedding_dim=128, epochs=25, batch_size=128,
                 sweep_train_size=None, sweep_val_fraction=0.1, sweep_epochs=10, projection="auto",
                 plot_points=2000),
}

# The main run ("circle-m..-g..") and each point of the validation sweep ("sweepval-m..-g..", m and
# gamma in the name) train an embedding network; k, eps, the projection and plot sizes only evaluate it.
NETWORK = ("train_size", "width", "embedding_dim", "batch_size", "lr", "reduction")
CHECKPOINTS = {
    "circle-*": (*NETWORK, "m", "gamma", "epochs"),
    "sweepval-*": (*NETWORK, "sweep_val_fraction", "sweep_train_size", "sweep_epochs"),
}

# How `make notebooks` records this chapter (stand-ins until a recording on
# the real CIFAR-10 is checked against the chapter's tests);
# loads: the datasets whose sizes the provenance line gives.
RECORDING = dict(profile="smoke", data="standin", loads=("cifar10",))
