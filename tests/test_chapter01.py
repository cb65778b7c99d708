"""Chapter 1 smoke checks, read back from a fresh papermill run of the notebook."""
import pytest

pytestmark = pytest.mark.notebook
STEM = "01_mlp_backprop"

SPEC_FORWARD = dict(H3=0.755, H4=0.68, y3=0.6802671966986485, y4=0.6637386974043528,
                    O5=0.801444986673512, y5=0.6902834929076443)
SPEC_GRADS = dict(w35=0.05534806987743573, w45=0.054003273982014814, w13=0.001858142321619319,
                  w23=0.0047780802555925355, w14=0.005720151544890907, w24=0.014708961115433763)
SPEC_UPDATED = dict(w35=0.24465, w45=0.84600, w13=0.09814, w23=0.79522, w14=0.39428, w24=0.58529)


@pytest.fixture(scope="module")
def records(notebook_records):
    return notebook_records(STEM)


def test_worked_example_matches_the_spec_exactly(records):
    for name, value in SPEC_FORWARD.items():
        assert records["ch01_forward"][name] == pytest.approx(value, abs=1e-15), name
    for name, value in SPEC_GRADS.items():
        assert records["ch01_grads"][name] == pytest.approx(value, abs=1e-15), name
    for name, value in SPEC_UPDATED.items():
        assert records["ch01_updated"][name] == pytest.approx(value, abs=5e-6), name


def test_autograd_equals_hand_gradients(records):
    assert records["ch01_autograd_max_difference"] < 1e-12


def test_sigmoid_gradients_vanish_relative_to_relu(records):
    ratio = records["ch01_first_to_last_gradient_ratio"]
    assert ratio["sigmoid"] < ratio["relu"] / 100


def test_matched_initialisation_keeps_gradients_flat(records):
    ratio = records["ch01_first_to_last_gradient_ratio"]
    # He-initialised ReLU: orders of magnitude above the sigmoid, and far above ReLU with the default init
    assert ratio["relu + He init"] > 1e4 * ratio["sigmoid"]
    assert ratio["relu + He init"] > 20 * ratio["relu"]
    assert ratio["tanh + Xavier init"] > 5 * ratio["tanh"]
    # "flat": the first layer's gradient within a factor of 30 of the last one's (default ReLU: > 100 apart)
    for name in ("relu + He init", "tanh + Xavier init"):
        assert 1 / 30 < ratio[name] < 30, name
    assert ratio["relu"] < 1 / 30  # the prose's point: default-initialised ReLU does shrink gradients


def test_adam_rescales_the_first_layers_step(records):
    step = records["ch01_first_to_last_step_ratio"]
    assert step["Adam"] > 1e3 * step["SGD"]
    assert step["SGD"] < 1e-6


def test_grid_has_twelve_rows_and_learns(records):
    grid = records["ch01_grid"]
    assert len(grid) == 12
    combos = {(r["activation"], r["loss"], r["optimizer"]) for r in grid}
    assert len(combos) == 12
    assert records["ch01_best_test_acc"] > 0.8  # chance is 0.1
    # cross-entropy on logits and NLL on log-softmax are the same loss: identical results
    by_combo = {(r["activation"], r["loss"], r["optimizer"]): r["test acc"] for r in grid}
    for act in ("ReLU", "LeakyReLU", "Sigmoid"):
        for opt in ("SGD", "Adam"):
            assert by_combo[(act, "cross-entropy", opt)] == pytest.approx(by_combo[(act, "NLL", opt)], abs=0.01)


def test_nll_on_raw_logits_is_visibly_worse(records):
    assert records["ch01_nll_logits_acc"] < records["ch01_nll_logsoftmax_acc"] - 0.3
    pitfall = records["ch01_nll_logits_grid"]
    correct = {(r["activation"], r["optimizer"]): r["test acc"] for r in records["ch01_grid"] if r["loss"] == "NLL"}
    assert {(r["activation"], r["optimizer"]) for r in pitfall} == set(correct)  # all six NLL rows, with the bug
    for row in pitfall:
        key = (row["activation"], row["optimizer"])
        assert row["test acc, NLL on raw logits"] < correct[key] - 0.3, key
        assert row["test acc, NLL on log_softmax"] == correct[key], key
        assert row["test acc, NLL on raw logits"] < 0.3, key  # chance is 0.1
    assert records["ch01_nll_logits_diverged"] >= 1  # the prose explains the diverged rows: there must be some
    for row in pitfall:
        if row["diverged"] == "no":  # a completed raw-logits run collapses onto (almost) a single class
            assert row["classes predicted"] <= 3, row


def test_adam_with_lr_01_is_worse_than_the_default(records):
    adam_default = next(r["test acc"] for r in records["ch01_grid"]
                        if (r["activation"], r["loss"], r["optimizer"]) == ("ReLU", "cross-entropy", "Adam"))
    assert records["ch01_adam_lr01_acc"] < adam_default


def test_a_validation_split_by_batch_position_leaks_once_the_loader_shuffles(records):
    # The original's loop on MNIST's 60,000 indices, batch 128: batch int(0.8 * 469) = 375 neither
    # trains nor validates; without shuffling the other 11,872 validation images are a clean holdout,
    # with shuffling nearly all of them have been trained on by epoch 5.
    assert records["ch01_split_unused_images"] == 128
    assert records["ch01_split_val_size"] == 60_000 - 376 * 128
    assert records["ch01_split_val_seen_unshuffled"] == 0
    assert records["ch01_split_val_seen_shuffled"] > 0.99 * records["ch01_split_val_size"]
    assert records["ch01_split_trained_shuffled"] > 0.99 * 60_000


def test_the_shadowed_epoch_count_shortens_every_later_run(records):
    assert records["ch01_shadowed_epochs"] == list(range(30, 18, -1))
