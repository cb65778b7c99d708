"""Chapter 4 smoke checks, read back from a fresh papermill run of the notebook."""
import pytest

pytestmark = pytest.mark.notebook
STEM = "04_adversarial"


@pytest.fixture(scope="module")
def records(notebook_records):
    return notebook_records(STEM)


def at_eps(records, eps):
    """The index of `eps` in the robust-accuracy curves."""
    grid = records["ch04_curve_eps"]
    assert eps in grid, f"the curves must include eps={eps}; they have {grid}"
    return grid.index(eps)


def test_eps_zero_leaves_inputs_unchanged(records):
    assert records["ch04_eps0_max_change"] == 0.0


def test_perturbation_stays_within_eps(records):
    assert 0 < records["ch04_eps_max_change"] <= records["ch04_eps"] + 1e-6


def test_fgsm_lowers_accuracy(records):
    clean, adv = records["ch04_baseline_clean_acc"], records["ch04_baseline_adv_acc"]
    assert clean > 0.4, "the baseline must learn the task before an attack means anything"
    assert adv < clean - 0.2, (clean, adv)


def test_pgd_lowers_accuracy_at_least_as_much_as_fgsm(records):
    curves = records["ch04_curves"]
    for model in ("baseline", "advtrained"):
        fgsm, pgd = curves[model]["FGSM"], curves[model]["PGD"]
        assert fgsm[0] == pgd[0], "eps=0 is the clean accuracy for both attacks"
        i = at_eps(records, records["ch04_eps"])
        assert pgd[i] <= fgsm[i], f"{model}, eps={records['ch04_eps']}: PGD {pgd[i]} above FGSM {fgsm[i]}"
        assert fgsm[i] < fgsm[0] and pgd[i] < pgd[0]
        # Elsewhere on the curve PGD is not guaranteed to win image by image (its steps are smaller
        # than FGSM's single one); allow the flip of a couple of images, which varies between CPUs.
        slack = 2 / records["ch04_curve_size"]
        for eps, f, p in zip(records["ch04_curve_eps"][1:], fgsm[1:], pgd[1:]):
            assert p <= f + slack, f"{model}, eps={eps}: PGD accuracy {p} above FGSM accuracy {f}"


def test_adversarial_training_raises_adversarial_accuracy(records):
    base, robust = records["ch04_baseline_adv_acc"], records["ch04_advtrained_adv_acc"]
    assert robust > base + 0.1, (base, robust)
    i = at_eps(records, records["ch04_eps"])
    curves = records["ch04_curves"]
    assert curves["advtrained"]["FGSM"][i] > curves["baseline"]["FGSM"][i] + 0.1


def test_results_table_has_original_numbers_beside_ours(records):
    rows = {r["model"]: r for r in records["ch04_results"]}
    assert rows["baseline"]["clean (original)"] == pytest.approx(0.6991)
    assert rows["baseline"]["FGSM + noise (original)"] == pytest.approx(0.4841)
    assert rows["adversarially trained"]["clean (original)"] == pytest.approx(0.8236)
    assert rows["adversarially trained"]["FGSM + noise (original)"] == pytest.approx(0.5223)
    assert rows["baseline"]["clean"] == records["ch04_baseline_clean_acc"]
    assert rows["adversarially trained"]["FGSM + noise"] == records["ch04_advtrained_adv_acc"]


def test_smoke_profile_uses_pca(records):
    assert records["ch04_embedding_method"] == "PCA"
