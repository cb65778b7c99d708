"""helpers.attacks: FGSM and PGD equal torchattacks bit for bit; budgets, modes, noise, the fit adversary, errors."""
import functools

import pytest
import torch
import torchattacks  # test-only; installed without its pins (see the Makefile)
from sklearn.datasets import load_digits
from torch import nn

from helpers import attacks, models


def small_cnn() -> nn.Module:
    """A tiny CNN with BatchNorm and Dropout, so that train vs eval mode changes its outputs."""
    torch.manual_seed(0)
    return nn.Sequential(models.Normalize([0.5] * 3, [0.5] * 3), nn.Conv2d(3, 8, 3, padding=1),
                         nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.3),
                         nn.Flatten(), nn.Linear(8 * 8 * 8, 10))


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    return torch.rand(16, 3, 16, 16, generator=g), torch.randint(0, 10, (16,), generator=g)


@pytest.fixture(scope="module")
def digits_model():
    """An MLP trained in a second on scikit-learn's 8x8 digits (pixels scaled to [0, 1])."""
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    y = torch.tensor(digits.target)
    torch.manual_seed(0)
    model = models.MLP((64, 64, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(60):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval(), x, y


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


@pytest.mark.parametrize("training", [True, False])
def test_fgsm_equals_torchattacks(batch, training):
    x, y = batch
    model = small_cnn().train(training)
    for eps in (0.0, 0.03, 8 / 255, 0.1):
        ours = attacks.fgsm(model, x, y, eps)
        theirs = torchattacks.FGSM(model, eps=eps)(x, y)
        assert torch.equal(ours, theirs), f"eps={eps}: max diff {(ours - theirs).abs().max()}"
    assert model.training == training


@pytest.mark.parametrize("eps, alpha, steps", [(0.03, 0.01, 5), (8 / 255, 2 / 255, 10), (0.1, 0.1, 1)])
def test_pgd_equals_torchattacks(batch, eps, alpha, steps):
    x, y = batch
    model = small_cnn().train()
    ours = attacks.pgd(model, x, y, eps, alpha, steps)
    theirs = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=False)(x, y)
    assert torch.equal(ours, theirs), f"max diff {(ours - theirs).abs().max()}"


def test_equal_to_torchattacks_on_the_books_resnet():
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(4, 3, 32, 32, generator=g), torch.randint(0, 10, (4,), generator=g)
    torch.manual_seed(0)
    model = models.ResNet18(width=0.125).train()
    assert torch.equal(attacks.fgsm(model, x, y, 0.05), torchattacks.FGSM(model, eps=0.05)(x, y))
    assert torch.equal(attacks.pgd(model, x, y, 0.05, 0.02, 3),
                       torchattacks.PGD(model, eps=0.05, alpha=0.02, steps=3, random_start=False)(x, y))


def test_eps_zero_is_the_identity(batch):
    x, y = batch
    model = small_cnn()
    assert torch.equal(attacks.fgsm(model, x, y, 0.0), x)
    assert torch.equal(attacks.pgd(model, x, y, 0.0, 0.01, 5), x)
    assert torch.equal(attacks.pgd(model, x, y, 0.0, 0.01, 5, random_start=True), x)
    assert torch.equal(attacks.gaussian_noise(x, 0.0), x)


@pytest.mark.parametrize("random_start", [False, True])
def test_outputs_are_pixels_within_eps(batch, random_start):
    x, y = batch
    x = x.clone()
    x[:, :, :2] = 0.0  # pixels at the bounds, where the [0, 1] clamp must act
    x[:, :, -2:] = 1.0
    model = small_cnn()
    eps = 0.07
    outputs = [attacks.fgsm(model, x, y, eps),
               attacks.pgd(model, x, y, eps, alpha=0.03, steps=7, random_start=random_start,
                           generator=torch.Generator().manual_seed(0))]
    for x_adv in outputs:
        assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
        assert x_adv.min() >= 0 and x_adv.max() <= 1
        assert (x_adv - x).abs().max() <= eps + 1e-6
        assert (x_adv - x).abs().max() >= eps - 1e-6  # the budget is used, not just respected
        assert not x_adv.requires_grad


def test_pgd_random_start_is_reproducible_with_a_generator(batch):
    x, y = batch
    model = small_cnn()
    run = lambda seed: attacks.pgd(model, x, y, 0.05, 0.02, 2, random_start=True,  # noqa: E731
                                   generator=torch.Generator().manual_seed(seed))
    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


def test_mode_restored_and_no_parameter_grads(batch):
    x, y = batch
    model = small_cnn().train()
    model[2].eval()  # a frozen BatchNorm inside a training model: each module's own mode comes back
    seen = []
    model[1].register_forward_hook(lambda module, inputs, output: seen.append(module.training))
    attacks.fgsm(model, x, y, 0.1)
    attacks.pgd(model, x, y, 0.1, 0.02, 3)
    assert seen and not any(seen), "the attack must run the model in eval mode"
    assert [m.training for m in model] == [True, True, False, True, True, True, True, True]
    assert all(p.grad is None for p in model.parameters())
    running_mean = model[2].running_mean.clone()
    model[2].train()
    attacks.fgsm(model, x, y, 0.1)
    assert torch.equal(model[2].running_mean, running_mean), "the attack must not update BatchNorm statistics"


def test_mode_restored_after_an_error(batch):
    x, y = batch
    model = small_cnn().train()
    with pytest.raises(RuntimeError):
        attacks.fgsm(model, x[:, :, :8], y, 0.1)  # wrong spatial size for the Linear layer
    assert all(m.training for m in model.modules())


def test_pgd_hurts_at_least_as_much_as_fgsm_on_a_trained_model(digits_model):
    """PGD maximises the loss better than FGSM's single step; accuracy follows, with a clear margin at eps=0.1.

    On this nearly linear model FGSM is close to optimal at small eps (PGD fools only ~1% more of
    the 1,797 images at eps=0.05), so accuracy there only gets a small slack against argmax flips
    between CPUs; the mean loss, which PGD maximises, must rise at every eps (by ~3% at 0.05).
    """
    model, x, y = digits_model
    clean = accuracy(model, x, y)
    assert clean > 0.95
    for eps in (0.05, 0.1, 0.2):
        x_fgsm = attacks.fgsm(model, x, y, eps)
        x_pgd = attacks.pgd(model, x, y, eps, alpha=eps / 4, steps=10)
        with torch.no_grad():
            loss_fgsm = nn.functional.cross_entropy(model(x_fgsm), y).item()
            loss_pgd = nn.functional.cross_entropy(model(x_pgd), y).item()
        fgsm_acc, pgd_acc = accuracy(model, x_fgsm, y), accuracy(model, x_pgd, y)
        assert fgsm_acc < clean - 0.05, (eps, clean, fgsm_acc)
        assert loss_pgd > 1.01 * loss_fgsm, (eps, loss_fgsm, loss_pgd)
        assert pgd_acc <= fgsm_acc + 0.005, (eps, fgsm_acc, pgd_acc)
    x_fgsm, x_pgd = attacks.fgsm(model, x, y, 0.1), attacks.pgd(model, x, y, 0.1, alpha=0.025, steps=10)
    assert accuracy(model, x_pgd, y) < accuracy(model, x_fgsm, y) - 0.01  # measured: 71 images (4%) fewer


def test_gaussian_noise_statistics_and_clipping():
    x = torch.full((20000,), 0.5)
    noisy = attacks.gaussian_noise(x, 0.01, generator=torch.Generator().manual_seed(0))
    assert abs((noisy - x).std().item() - 0.01) < 5e-4
    assert abs((noisy - x).mean().item()) < 5e-4
    edge = attacks.gaussian_noise(torch.ones(1000), 0.5)
    assert edge.max() <= 1 and edge.min() >= 0
    same = [attacks.gaussian_noise(x, 0.1, torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(*same)


def test_fgsm_with_noise_is_fgsm_then_noise(batch):
    x, y = batch
    model = small_cnn()
    attack = attacks.fgsm_with_noise(0.1, 0.01, generator=torch.Generator().manual_seed(5))
    expected = attacks.gaussian_noise(attacks.fgsm(model, x, y, 0.1), 0.01, torch.Generator().manual_seed(5))
    assert torch.equal(attack(model, x, y), expected)
    assert (attack(model, x, y) - x).abs().max() <= 0.1 + 5 * 0.01 + 1e-3
    assert torch.equal(attacks.fgsm_with_noise(0.1, 0.0)(model, x, y), attacks.fgsm(model, x, y, 0.1))


def test_adversary_replaces_whole_batches_with_probability_p(batch):
    x, y = batch
    model = small_cnn()
    flipped = lambda model, x, y: 1 - x  # noqa: E731  (easy to recognise)
    for p, low, high in ((0.0, 0, 0), (1.0, 400, 400), (0.5, 160, 240)):
        adv = attacks.adversary(flipped, p, generator=torch.Generator().manual_seed(0))
        outputs = [adv(model, x, y) for _ in range(400)]
        replaced = sum(torch.equal(out, 1 - x) for out in outputs)
        assert all(torch.equal(out, x) or torch.equal(out, 1 - x) for out in outputs)
        assert low <= replaced <= high, (p, replaced)


def test_adversary_inside_fit_leaves_training_working(batch):
    from helpers import training

    x, y = batch
    model = small_cnn()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    adv = attacks.adversary(functools.partial(attacks.fgsm, eps=0.1), 0.5, torch.Generator().manual_seed(0))
    history = training.fit(model, loader, epochs=2, optimizer=torch.optim.Adam(model.parameters()),
                           adversary=adv, progress=False)
    assert len(history.epochs) == 2 and model.training


@pytest.mark.parametrize("call, message", [
    (lambda m, x, y: attacks.fgsm(m, x, y, -0.1), "eps"),
    (lambda m, x, y: attacks.fgsm(m, x, y, float("nan")), "eps"),
    (lambda m, x, y: attacks.pgd(m, x, y, -0.1, 0.01, 3), "eps"),
    (lambda m, x, y: attacks.pgd(m, x, y, 0.1, 0.0, 3), "alpha"),
    (lambda m, x, y: attacks.pgd(m, x, y, 0.1, -0.01, 3), "alpha"),
    (lambda m, x, y: attacks.pgd(m, x, y, 0.1, 0.01, 0), "steps"),
    (lambda m, x, y: attacks.fgsm(m, x * 255, y, 0.1), r"\[0, 1\]"),
    (lambda m, x, y: attacks.fgsm(m, (x - 0.5) / 0.5, y, 0.1), "before normalisation"),
    (lambda m, x, y: attacks.fgsm(m, torch.full_like(x, float("nan")), y, 0.1), "NaN"),
    (lambda m, x, y: attacks.fgsm(m, (x * 255).to(torch.uint8), y, 0.1), "float"),
    (lambda m, x, y: attacks.pgd(m, x, y[:-1], 0.1, 0.01, 3), "one label per image"),
    (lambda m, x, y: attacks.fgsm(m, x, y[:, None], 0.1), "one label per image"),
    (lambda m, x, y: attacks.fgsm(m, x, y.float(), 0.1), "integer"),
    (lambda m, x, y: attacks.gaussian_noise(x, -0.01), "sigma"),
    (lambda m, x, y: attacks.gaussian_noise(x + 1, 0.01), r"\[0, 1\]"),
    (lambda m, x, y: attacks.fgsm_with_noise(-0.1, 0.01), "eps"),
    (lambda m, x, y: attacks.fgsm_with_noise(0.1, -0.01), "sigma"),
    (lambda m, x, y: attacks.adversary(functools.partial(attacks.fgsm, eps=0.1), 1.5), "probability"),
    (lambda m, x, y: attacks.adversary("fgsm", 0.5), "callable"),
])
def test_bad_input_gives_a_clear_error(batch, call, message):
    x, y = batch
    with pytest.raises(ValueError, match=message):
        call(small_cnn(), x, y)
