"""Chapter 5 smoke checks: circle loss trains an embedding, k-NN classifies well, FGSM through the surrogate hurts it."""
import pytest

STEM = "05_circle_loss"
CHANCE = 0.1  # ten classes


@pytest.fixture(scope="module")
def records(notebook_records):
    return notebook_records(STEM)


@pytest.mark.notebook
def test_circle_loss_decreases_over_training(records):
    curve = records["ch05_loss_curve"]
    assert len(curve) >= 3
    assert records["ch05_loss_last"] < 0.95 * records["ch05_loss_first"], curve
    # a trend, not one lucky epoch: the second half of training sits below the first
    half = len(curve) // 2
    assert sum(curve[half:]) / len(curve[half:]) < sum(curve[:half]) / half, curve


@pytest.mark.notebook
def test_training_pulls_positives_together_and_pushes_negatives_apart(records):
    assert records["ch05_sp_mean"] > records["ch05_sn_mean"] + 0.3


@pytest.mark.notebook
def test_knn_accuracy_is_well_above_chance(records):
    assert records["ch05_knn_acc"] > 3 * CHANCE
    assert records["ch05_head_acc"] > 3 * CHANCE


@pytest.mark.notebook
def test_the_attack_through_the_surrogate_lowers_knn_accuracy(records):
    assert records["ch05_knn_adv_acc"] < records["ch05_knn_acc"] - 0.2
    assert records["ch05_head_adv_acc"] < records["ch05_head_acc"] - 0.2
    # the gradient's direction matters: random signs of the same size hurt less than FGSM
    assert records["ch05_knn_adv_acc"] < records["ch05_knn_random_acc"]


@pytest.mark.notebook
def test_sweep_covers_the_literature_settings(records):
    sweep = records["ch05_sweep"]
    settings = {(row["m"], row["gamma"]) for row in sweep}
    assert {(0.25, 256.0), (0.25, 80.0), (0.4, 80.0)} <= settings
    for row in sweep:
        assert 0 <= row["knn_acc"] <= 1
        assert row["loss, last epoch"] == row["loss, last epoch"]  # not NaN
    # in the smoke budget, a small gamma learns and the literature's large ones stall
    small = max(row["knn_acc"] for row in sweep if row["gamma"] <= 8)
    assert small > max(row["knn_acc"] for row in sweep if row["gamma"] >= 80)


@pytest.mark.notebook
def test_projection_and_settings_recorded(records):
    assert records["ch05_projection"] in ("PCA", "UMAP")
    assert records["ch05_eps"] == 0.1 and records["ch05_sigma"] == 0.01 and records["ch05_k"] == 5
