"""Chapter 4 smoke checks, read back from a fresh papermill run of the notebook."""
import pytest
import torch

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
    # The smoke run is short: adversarial training roughly doubles the accuracy under attack rather
    # than reaching the original's level. Margins: 25 test images, and at least 1.5 times the baseline.
    base, robust = records["ch04_baseline_adv_acc"], records["ch04_advtrained_adv_acc"]
    assert robust > base + 0.05 and robust > 1.5 * base, (base, robust)
    curves = records["ch04_curves"]
    gains = [a - b for a, b in zip(curves["advtrained"]["FGSM"][1:], curves["baseline"]["FGSM"][1:])]
    i = at_eps(records, records["ch04_eps"]) - 1
    assert gains[i] > 0 and sum(gains) / len(gains) > 0.05, gains


def test_results_table_shows_this_runs_numbers_beside_the_originals(records):
    rows = {r["model"]: r for r in records["ch04_results"]}
    assert set(rows) == {"baseline", "adversarially trained"}
    for key, model in (("baseline", "baseline"), ("advtrained", "adversarially trained")):
        assert rows[model]["clean"] == records[f"ch04_{key}_clean_acc"]
        assert rows[model]["FGSM + noise"] == records[f"ch04_{key}_adv_acc"]
        for column in ("clean (original)", "FGSM + noise (original)"):
            assert 0 < rows[model][column] < 1, (model, column)


@pytest.mark.fresh_run("reads the file this session's smoke run saved in its checkpoint folder")
def test_results_are_saved_for_chapter_5(records):
    """The file chapter 5 reads holds exactly the numbers this run recorded (profile, data, seed as keys)."""
    from helpers.profile import Setup
    from helpers.record import load_results

    run = Setup("smoke", "tests", torch.device("cpu"), 0, "standin", "04")
    saved = load_results("04", run)
    assert saved is not None, "chapter 4 must save its results into the checkpoint folder, smoke included"
    for key in ("baseline", "advtrained"):
        assert saved[f"{key}_clean"] == records[f"ch04_{key}_clean_acc"]
        assert saved[f"{key}_adv"] == records[f"ch04_{key}_adv_acc"]
    assert saved["eps"] == records["ch04_eps"] and saved["sigma"] == records["ch04_sigma"]
    assert saved["profile"] == "smoke"
    assert load_results("04", Setup("smoke", "tests", torch.device("cpu"), 1, "standin", "04")) is None


def test_embedding_caption_names_the_projection_actually_used(records):
    """'auto' means UMAP where umap-learn is installed, else PCA; the recorded method is the one that ran."""
    import importlib.util

    from helpers.profile import chapter_settings

    method = chapter_settings("04", records["ch04_provenance"]["profile"]).embedding
    umap_installed = importlib.util.find_spec("umap") is not None
    expected = "UMAP" if method == "umap" or (method == "auto" and umap_installed) else "PCA"
    assert records["ch04_embedding_method"] == expected
    assert records["ch04_embedding_method"].lower() in records["ch04_embedding_note"].lower()


def test_the_clean_accuracy_cost_of_adversarial_training_is_reported(records):
    cost = records["ch04_baseline_clean_acc"] - records["ch04_advtrained_clean_acc"]
    assert records["ch04_clean_cost"] == pytest.approx(cost, abs=1e-12)
    # The smoke run pays the usual price on clean images, and the prose says so.
    assert cost > 0
    assert "cost of" in records["ch04_clean_cost_note"]
