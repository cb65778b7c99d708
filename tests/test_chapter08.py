"""Chapter 8 smoke checks: what the ablation notebook must show, read back from a fresh papermill run."""
import math

import pytest

STEM = "08_ablation"


@pytest.fixture(scope="module")
def records(notebook_records):
    return notebook_records(STEM)


@pytest.mark.notebook
def test_ablating_a_trained_layer_lowers_accuracy(records):
    # SimpleNet: zeroing the trained conv at evaluation time leaves the classifier blind.
    assert records["ch08_eval_simple_conv_zeroed_acc"] < records["ch08_eval_simple_clean_acc"] - 0.1
    # ResNet-18: zeroing single residual branches costs accuracy, clearly for the most important block.
    drops = records["ch08_block_drops"]
    assert len(drops) == 8
    assert max(drops.values()) > 0.05  # the most important block matters clearly
    assert sum(drops.values()) / len(drops) > 0.0  # and on average a zeroed block costs accuracy
    assert all(d > -0.05 for d in drops.values())  # no block's removal helps beyond noise
    # Zeroing most of a stage's channels hurts more than zeroing none of them, somewhere.
    assert max(records["ch08_channel_drop_largest_fraction"].values()) > 0.05


@pytest.mark.notebook
def test_tables_have_mean_and_std_over_at_least_two_seeds(records):
    assert records["ch08_n_seeds"] >= 2
    for name, table in (("simple", records["ch08_simple_table"]), ("recipe", records["ch08_recipe"]["table"])):
        assert table, name
        for variant, row in table.items():
            assert {"mean", "std", "n"} <= set(row), (name, variant)
            assert row["n"] >= 2, (name, variant)
            assert 0.0 <= row["mean"] <= 1.0 and math.isfinite(row["std"]) and row["std"] >= 0.0
    assert len(records["ch08_recipe"]["table"]) == 10  # one-off (5) + leave-one-out (5)


@pytest.mark.notebook
def test_rerun_with_the_cache_skips_every_finished_run(records):
    assert records["ch08_cache_first_ran"] == 4 * records["ch08_n_seeds"]
    assert records["ch08_cache_rerun_ran"] == 0
    assert records["ch08_cache_rerun_skipped"] == records["ch08_cache_first_ran"]


@pytest.mark.notebook
def test_controlled_conv_ablation_and_the_pitfall(records):
    trained, frozen = records["ch08_simple_trained_acc"], records["ch08_simple_frozen_acc"]
    assert trained > frozen + 0.05  # training the conv matters...
    assert records["ch08_simple_zeroed_acc"] < 0.15  # a zeroed conv leaves nothing to learn from
    # ...but ablating the trained baseline and training on hides it.
    assert records["ch08_pitfall_continued_acc"] > records["ch08_pitfall_controlled_acc"] + 0.05
    assert records["ch08_pitfall_controlled_acc"] == pytest.approx(frozen)


@pytest.mark.notebook
def test_interaction_effects_are_reported(records):
    effects = records["ch08_recipe"]["effects"]
    assert set(effects) == {"batchnorm", "label_smoothing", "augment", "adam"}
    # The recipe with BatchNorm learns well above chance (10 classes).
    assert records["ch08_recipe"]["baseline_acc"] > 0.2
    # BatchNorm is the enabling component here: worth a lot when added to the bare recipe.
    assert effects["batchnorm"]["gain alone"] > 0.1
    # One-off and leave-one-out disagree for some component: the components interact.
    assert max(abs(row["interaction"]) for row in effects.values()) > 0.05


def test_the_originals_per_batch_zeroing_leaves_neither_weight_nor_bias_at_zero(records):
    # conv1.weight zeroed before every batch, then moved by every optimiser step; the bias never zeroed.
    assert records["ch08_original_zeroing_weight_left"] > 0
    assert records["ch08_original_zeroing_bias_moved"] > 0
    # With the weight truly at 0 the conv outputs its bias alone: one prediction for every image.
    assert records["ch08_original_zeroed_classes"] == 1


def test_the_leave_one_out_note_reads_the_reference_runs(records):
    low, high = records["ch08_all_min"], records["ch08_all_max"]
    assert 0.0 <= low <= high <= 1.0
    assert ("does not train reliably" in records["ch08_loo_note"]) == (high - low > 0.1)
