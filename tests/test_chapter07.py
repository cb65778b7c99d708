"""Chapter 7 smoke checks, read back from a fresh papermill run of the notebook."""
import pytest

pytestmark = pytest.mark.notebook
STEM = "07_interpretability"


@pytest.fixture(scope="module")
def records(notebook_records):
    return notebook_records(STEM)


def test_model_is_well_above_chance(records):
    # Grad-CAM of a network that learnt nothing would explain nothing
    assert records["ch07_test_acc"] > 4 * records["ch07_chance"]


def test_heatmaps_have_the_input_size_and_lie_in_unit_interval(records):
    height, width = records["ch07_input_hw"]
    assert set(records["ch07_heatmaps"]) >= {"grad_cam", "occlusion 4px", "occlusion 8px"}
    for name, heat in records["ch07_heatmaps"].items():
        assert heat["shape"][1:] == [height, width], name
        assert heat["shape"][0] == records["ch07_shown"]["correct"] + records["ch07_shown"]["wrong"], name
        assert 0.0 <= heat["min"] <= heat["max"] <= 1.0, name
        assert heat["max"] > 0.5, f"{name}: an all-zero map explains nothing"
    for shot in records["ch07_timeline"]:
        assert shot["cam_shape"][1:] == [height, width]


def test_correct_and_wrong_predictions_are_shown(records):
    assert records["ch07_shown"]["correct"] >= 1 and records["ch07_shown"]["wrong"] >= 1


def test_occluding_the_grad_cam_peak_hurts_more_than_the_least_salient_region(records):
    # on average over the test images shown ...
    assert records["ch07_drop_peak"] > records["ch07_drop_least"]
    assert len(records["ch07_drops_shown"]["peak"]) == records["ch07_shown"]["correct"] + records["ch07_shown"]["wrong"]
    # ... and over many more test images, clearly
    assert records["ch07_check_images"] >= 50
    assert records["ch07_drop_peak_many"] > 2 * records["ch07_drop_least_many"]
    assert records["ch07_peak_wins_many"] > 0.6


def test_the_coarse_last_block_fails_the_test_where_the_chosen_layer_passes(records):
    check = records["ch07_layer_check"]
    chosen, coarse = check[records["ch07_cam_layer"]], check["features.29"]
    assert chosen["map size"] == "8x8" and coarse["map size"] == "2x2"
    assert chosen["drop, peak hidden"] > chosen["drop, least salient hidden"]
    assert chosen["peak hurts more"] > coarse["peak hurts more"]


def test_filter_visualisation_raises_the_filters_activation(records):
    for layer, gain in records["ch07_filter_gain"].items():
        assert gain > 0, layer


def test_training_timeline_records_every_epoch_and_learns(records):
    timeline = records["ch07_timeline"]
    assert [shot["epoch"] for shot in timeline] == list(range(len(timeline)))
    assert timeline[0]["val_acc"] is None and len(timeline) >= 3
    assert timeline[-1]["val_acc"] > 4 * records["ch07_chance"]


def test_failing_run_is_visible_in_its_snapshots(records):
    failing, chance = records["ch07_failing"], records["ch07_chance"]
    if failing["diverged"]:
        # the loss overflowed to inf/NaN: fit stopped early and said so (the chapter's prose covers
        # this case); the snapshots stop at the last completed epoch
        assert failing["epochs_completed"] < records["ch07_failing_epochs"]
        return
    assert failing["epochs_completed"] == records["ch07_failing_epochs"]
    assert failing["val_acc"] < 2 * chance, "the failing run must stay near chance"
    # Grad-CAM nearly flat: most of the fixed images' maps have no peak at all
    assert failing["flat_maps"] >= 0.5 * records["ch07_fixed_images"]
    assert records["ch07_healthy_flat_maps"] < failing["flat_maps"]
    # and its units are dying, clearly more than the healthy run's
    assert failing["dead_fraction"] > records["ch07_healthy_dead_fraction"] + 0.25


def test_imagenet_section_is_skipped_offline(records):
    assert records["ch07_imagenet_ran"] is False
