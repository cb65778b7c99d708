"""Chapter 2 smoke checks, read back from a fresh papermill run of the notebook."""
import pytest
from scipy.stats import spearmanr

pytestmark = pytest.mark.notebook
STEM = "02_dropout_regularisation"


@pytest.fixture(scope="module")
def records(notebook_records):
    return notebook_records(STEM)


def test_inverted_dropout_arithmetic_is_exact(records):
    assert records["ch02_dropout_p05"] == [-9.0, 0.0, 6.0, 0.0, 3.0]
    assert records["ch02_dropout_p04"] == [-7.5, 0.0, 5.0, 0.0, 2.5]


def test_regularisation_shrinks_the_generalisation_gap(records):
    rows = {r["model"]: r for r in records["ch02_claim1"]}
    assert rows["weight decay 3e-3"]["gap"] < rows["no penalty"]["gap"]
    assert rows["L1 1e-4"]["gap"] < rows["no penalty"]["gap"]


def test_noise_features_increase_overfitting(records):
    rows = records["ch02_claim2"]
    assert rows[-1]["gap"] > rows[0]["gap"]


def test_sweep_train_accuracy_falls_as_the_coefficient_grows(records):
    sweep = records["ch02_sweep"]
    train = [r["train acc"] for r in sweep]
    coefficients = [r["coefficient"] for r in sweep]
    assert train[-1] < train[0] - 0.05
    assert spearmanr(coefficients, train).correlation < -0.8


def test_capacity_table(records):
    rows = records["ch02_capacity"]
    assert [r["hidden units"] for r in rows][:2] == [4, 256]
    assert rows[1]["train acc"] > rows[0]["train acc"]  # 4 units underfit the moons


def test_dropout_reduces_overfitting_on_digits(records):
    final = records["ch02_dropout_digits"]
    assert final["dropout 0.5"]["val loss"] < final["dropout 0.0"]["val loss"]
