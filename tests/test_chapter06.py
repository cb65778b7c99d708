"""Chapter 6 smoke checks: SI grows through VGG-16, the ranking is sound and exact, compression works."""
import pytest

from helpers.models import VGG16_CONFIG
from helpers.profile import chapter_settings

STEM = "06_separation_index"
pytestmark = pytest.mark.notebook


@pytest.fixture(scope="module")
def records(notebook_records):
    return notebook_records(STEM)


def test_si_rises_from_the_input_to_the_last_feature_layer(records):
    assert records["ch06_si_last"] > records["ch06_si_input"] + 0.1
    si_test = records["ch06_layers"]["si_test"]
    assert si_test[-1] > si_test[0] + 0.1


def test_layer_curves_cover_the_input_and_all_31_modules(records):
    names = records["ch06_layers"]["layer"]
    assert len(names) == 32 and names[0] == "input" and names[24].startswith("23 MaxPool2d")
    for key in ("si_train", "csi_train", "si_test", "csi_test"):
        values = records["ch06_layers"][key]
        assert len(values) == 32 and all(0.0 <= v <= 1.0 for v in values), key


def test_the_cut_at_module_23_holds_most_of_the_si_rise(records):
    # (SI at module 23 - SI of the input) / (SI after the last module - SI of the input); the
    # smoke curve plateaus from about module 17, so the share sits near 1 with a wide margin.
    assert records["ch06_cut"] == 23
    assert records["ch06_cut_share_of_rise"] >= 0.8


def test_ranking_is_a_permutation_of_the_cut_features(records):
    assert sorted(records["ch06_ranking"]["order"]) == list(range(records["ch06_cut_features"]))


def test_ranking_curve_rises_then_plateaus(records):
    ranking = records["ch06_ranking"]
    si = ranking["si"]
    # What greedy selection guarantees: the first point is the best single feature's SI and the
    # last is the SI of all features (the curve itself need not be monotone).
    assert si[0] == ranking["first_feature_si"]
    assert si[0] >= ranking["sampled_single_feature_si"]
    if ranking["single_feature_sample"] == records["ch06_cut_features"]:  # smoke: every feature was tried
        assert si[0] == ranking["sampled_single_feature_si"]
    assert si[-1] == records["ch06_si_all_cut"]
    # What the chapter shows: a steep rise to a peak that beats all features together, then a
    # plateau. On a few hundred samples SI moves in steps of 1/n, so the exact argmax can land
    # anywhere on the plateau (it differs between CPUs); what must hold is that the first half of
    # the ranking already gets within 2 points of the peak.
    assert records["ch06_si_best_k"] == max(si) > si[-1]
    assert max(si) > si[0] + 0.1
    assert max(si[:len(si) // 2]) >= max(si) - 0.02
    assert si[records["ch06_best_k"] - 1] == max(si)


def test_fast_ranking_identical_to_both_naive_references(records):
    assert records["ch06_ranking_exact_check"] is True


def test_models_stay_well_above_chance(records):
    chance = records["ch06_chance"]
    assert records["ch06_vgg_test_acc"] > 3 * chance
    assert records["ch06_frozen_test_acc"] > 3 * chance
    for name, acc in records["ch06_compressed_acc"].items():
        assert acc["test"] > 2.5 * chance, name


def test_parameter_counts_match_the_formula(records):
    smoke = vars(chapter_settings("06", records["ch06_provenance"]["profile"]))
    formula = records["ch06_parameter_formula"]
    # the trunk: every convolution up to module 23 (k x k x c_in x c_out + c_out), BatchNorm if used
    trunk, c_in = 0, 3
    for item in VGG16_CONFIG[:VGG16_CONFIG.index("M", 10) + 1]:  # the first four blocks
        if item != "M":
            c_out = max(4, int(round(item * smoke["width"])))
            trunk += 9 * c_in * c_out + c_out + (2 * c_out if smoke["batchnorm"] else 0)
            c_in = c_out
    assert formula["trunk"] == trunk
    assert records["ch06_cut_features"] == c_in * 2 * 2
    k, h, c = formula["k"], formula["hidden"], formula["classes"]
    assert k == records["ch06_best_k"] and h == smoke["head_hidden"]
    counts = records["ch06_compressed_parameters"]
    assert counts["two hidden layers"] == trunk + (k + 1) * h + (h + 1) * h + (h + 1) * c
    assert counts["linear"] == trunk + (k + 1) * c
    assert records["ch06_reference_parameters"] == {"two hidden layers": 26_100_042, "linear": 7_639_274}
    assert records["ch06_vgg_parameters"] == 134_301_514


def test_results_table_has_every_model(records):
    rows = records["ch06_results"]
    assert [r["model"] for r in rows] == ["VGG-16", "VGG-16, frozen features, new classifier",
                                          "compressed, two hidden layers", "compressed, linear"]
    for r in rows:
        assert all(0.0 <= r[key] <= 1.0 for key in ("train acc", "val acc", "test acc", "SI", "CSI"))


def test_the_originals_hook_kept_the_relus_output_instead_of_the_convolutions(records):
    # output.detach() shares memory with module 0's output, which the in-place ReLU then overwrites.
    assert not records["ch06_hook_kept_has_negatives"]
    assert records["ch06_hook_real_has_negatives"]
    si = records["ch06_layers"]["si_train"]
    assert records["ch06_hook_si_kept"] == pytest.approx(si[2], abs=1e-12)  # module 1, the ReLU
    assert records["ch06_si_module0"] == si[1]


def test_the_selected_prefix_is_also_scored_on_held_out_samples(records):
    for key in ("ch06_si_best_k_held_out", "ch06_si_all_cut_held_out"):
        assert 0.0 <= records[key] <= 1.0
    assert records["ch06_selection_gain_in_sample"] == pytest.approx(
        records["ch06_si_best_k"] - records["ch06_si_all_cut"], abs=1e-12)
    assert records["ch06_selection_gain_held_out"] == pytest.approx(
        records["ch06_si_best_k_held_out"] - records["ch06_si_all_cut_held_out"], abs=1e-12)
    # Selection bias: the gain is largest on the samples that chose the features.
    assert records["ch06_selection_gain_held_out"] < records["ch06_selection_gain_in_sample"]
