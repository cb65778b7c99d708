"""Unit tests of helpers.ablation: variants, seeded fresh runs, the resumable cache, tables, eval-time ablation."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import helpers
from helpers import ablation
from helpers.data import loader

COMPONENTS = {"bn": (False, True), "smooth": (0.0, 0.25)}


# ---------------------------------------------------------------- variants as data

def test_add_one_in_and_leave_one_out_change_exactly_one_key():
    base = {"epochs": 3}
    one = ablation.add_one_in(COMPONENTS, base)
    loo = ablation.leave_one_out(COMPONENTS, base)
    assert one == {"none": {"epochs": 3, "bn": False, "smooth": 0.0},
                   "+bn": {"epochs": 3, "bn": True, "smooth": 0.0},
                   "+smooth": {"epochs": 3, "bn": False, "smooth": 0.25}}
    assert loo == {"all": {"epochs": 3, "bn": True, "smooth": 0.25},
                   "-bn": {"epochs": 3, "bn": False, "smooth": 0.25},
                   "-smooth": {"epochs": 3, "bn": True, "smooth": 0.0}}


@pytest.mark.parametrize("components, match", [({}, "empty"), ({"bn": True}, "pair"),
                                               ({"bn": (True, True)}, "same off and on")])
def test_components_bad_input(components, match):
    with pytest.raises(ValueError, match=match):
        ablation.add_one_in(components)


# ---------------------------------------------------------------- running and caching

class CountingRun:
    """A tiny 'training run': a fresh seeded Linear layer; counts how often it really runs."""

    def __init__(self):
        self.calls = []

    def __call__(self, config, seed):
        self.calls.append((dict(config), seed))
        model = nn.Linear(4, 1)  # built inside the run: fresh model, initialised from the harness's seed
        return {"score": float(model.weight.detach().sum()) + config["shift"], "shift": config["shift"]}


VARIANTS = {"a": {"shift": 0.0}, "b": {"shift": 1.0}, "c": {"shift": 2.0}}


def test_every_variant_starts_from_the_same_seeded_state():
    study = ablation.run_ablation(VARIANTS, CountingRun(), seeds=[0, 1], study="t")
    table = study.runs.pivot(index="seed", columns="variant", values="score")
    # same seed -> identical initial weights in every variant, so only the config's shift differs
    np.testing.assert_allclose(table["b"] - table["a"], 1.0, atol=1e-6)
    np.testing.assert_allclose(table["c"] - table["a"], 2.0, atol=1e-6)
    assert table.loc[0, "a"] != table.loc[1, "a"]  # different seeds really differ
    torch.manual_seed(1)
    assert table.loc[1, "a"] == pytest.approx(float(nn.Linear(4, 1).weight.detach().sum()), abs=1e-6)


def test_rerun_with_cache_skips_finished_runs(tmp_path):
    counter = CountingRun()
    first = ablation.run_ablation(VARIANTS, counter, seeds=[0, 1], study="t", cache_dir=tmp_path)
    assert (first.ran, first.skipped, len(counter.calls)) == (6, 0, 6)
    assert len(list(tmp_path.glob("*.json"))) == 6 and not list(tmp_path.glob("*.tmp"))
    second = ablation.run_ablation(VARIANTS, counter, seeds=[0, 1], study="t", cache_dir=tmp_path)
    assert (second.ran, second.skipped, len(counter.calls)) == (0, 6, 6)
    assert second.runs["cached"].all() and not first.runs["cached"].any()
    pd.testing.assert_frame_equal(first.runs.drop(columns="cached"), second.runs.drop(columns="cached"))


def test_resume_runs_only_what_is_missing(tmp_path):
    counter = CountingRun()
    ablation.run_ablation({"a": VARIANTS["a"]}, counter, seeds=[0], study="t", cache_dir=tmp_path)
    more = ablation.run_ablation(VARIANTS, counter, seeds=[0, 1], study="t", cache_dir=tmp_path)
    assert (more.ran, more.skipped) == (5, 1)
    assert ({"shift": 0.0}, 0) not in counter.calls[1:]


def test_cache_key_depends_on_config_seed_study_and_fixed_but_not_on_the_name(tmp_path):
    key = ablation.cache_key("s", {"x": 1}, 0, {"epochs": 5})
    assert key == ablation.cache_key("s", {"x": 1}, 0, {"epochs": 5})
    assert len({key, ablation.cache_key("s", {"x": 2}, 0, {"epochs": 5}),
                ablation.cache_key("s", {"x": 1}, 1, {"epochs": 5}),
                ablation.cache_key("t", {"x": 1}, 0, {"epochs": 5}),
                ablation.cache_key("s", {"x": 1}, 0, {"epochs": 6})}) == 5
    counter = CountingRun()
    ablation.run_ablation({"a": {"shift": 0.0}}, counter, [0], study="t", cache_dir=tmp_path)
    renamed = ablation.run_ablation({"renamed": {"shift": 0.0}}, counter, [0], study="t", cache_dir=tmp_path)
    assert renamed.skipped == 1 and len(counter.calls) == 1
    other = ablation.run_ablation({"a": {"shift": 0.0}}, counter, [0], study="t", cache_dir=tmp_path,
                                  fixed={"epochs": 9})
    assert other.ran == 1


def test_cache_key_depends_on_the_code():
    assert ablation.cache_key("s", {"x": 1}, 0, None, "a") != ablation.cache_key("s", {"x": 1}, 0, None, "b")


def _score_v1(config, seed):
    return {"score": config["shift"]}


def _score_v2(config, seed):
    return {"score": config["shift"] + 1.0}  # the experiment was edited


def _helper_v1():
    return 1


def _helper_v2():
    return 2


def test_code_fingerprint_follows_the_source_and_the_helpers_version(monkeypatch):
    assert ablation.code_fingerprint(_score_v1) == ablation.code_fingerprint(_score_v1)
    assert ablation.code_fingerprint(_score_v1) != ablation.code_fingerprint(_score_v2)
    assert ablation.code_fingerprint(_score_v1, _helper_v1) != ablation.code_fingerprint(_score_v1, _helper_v2)
    assert ablation.code_fingerprint(CountingRun()) == ablation.code_fingerprint(CountingRun())  # a callable object
    before = ablation.code_fingerprint(_score_v1)
    monkeypatch.setattr(helpers, "__version__", "99.0")
    assert ablation.code_fingerprint(_score_v1) != before
    with pytest.warns(UserWarning, match="source of"):
        ablation.code_fingerprint(len)  # no Python source: only its name can be part of the key


def test_edited_run_function_or_dependency_is_not_served_stale_results(tmp_path, monkeypatch):
    first = ablation.run_ablation(VARIANTS, _score_v1, [0], study="t", cache_dir=tmp_path)
    assert first.ran == 3
    same = ablation.run_ablation(VARIANTS, _score_v1, [0], study="t", cache_dir=tmp_path)
    assert same.skipped == 3
    edited = ablation.run_ablation(VARIANTS, _score_v2, [0], study="t", cache_dir=tmp_path)
    assert edited.ran == 3 and list(edited.runs["score"]) == [1.0, 2.0, 3.0]
    with_dep = ablation.run_ablation(VARIANTS, _score_v1, [0], study="t", cache_dir=tmp_path, depends_on=[_helper_v1])
    assert with_dep.ran == 3
    dep_edited = ablation.run_ablation(VARIANTS, _score_v1, [0], study="t", cache_dir=tmp_path,
                                       depends_on=[_helper_v2])
    assert dep_edited.ran == 3
    monkeypatch.setattr(helpers, "__version__", "99.0")
    new_release = ablation.run_ablation(VARIANTS, _score_v1, [0], study="t", cache_dir=tmp_path)
    assert new_release.ran == 3


def test_corrupt_cache_file_is_rerun_and_records_are_json(tmp_path):
    counter = CountingRun()
    ablation.run_ablation({"a": {"shift": 0.0}}, counter, [0], study="t", cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.json")
    record = json.loads(path.read_text())
    assert record["variant"] == "a" and record["seed"] == 0 and set(record["metrics"]) == {"score", "shift"}
    path.write_text("{half a file")
    again = ablation.run_ablation({"a": {"shift": 0.0}}, counter, [0], study="t", cache_dir=tmp_path)
    assert again.ran == 1 and json.loads(path.read_text())["metrics"] == record["metrics"]


def test_failed_run_leaves_no_cache_entry(tmp_path):
    def broken(config, seed):
        if config["shift"] == 1.0:
            raise RuntimeError("diverged")
        return {"score": 1.0}

    with pytest.raises(RuntimeError, match="diverged"):
        ablation.run_ablation(VARIANTS, broken, [0], study="t", cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.json"))) == 1 and not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("kwargs, match", [
    (dict(variants={}), "variants is empty"),
    (dict(seeds=[]), "non-empty list"),
    (dict(seeds=[0, 0]), "distinct"),
    (dict(seeds=[-1]), "non-negative"),
    (dict(variants={"a": [1, 2]}), "config dict"),
    (dict(variants={"a": {"edit": nn.Identity()}}), "plain JSON"),
    (dict(run=lambda c, s: 0.5), "dict of metrics"),
    (dict(run=lambda c, s: {"acc": "high"}), "must be a number"),
    (dict(run=lambda c, s: {"acc": float("nan")}), "finite"),
    (dict(run=lambda c, s: {"seed": 1.0}), "reserved"),
])
def test_run_ablation_bad_input(kwargs, match):
    args = dict(variants={"a": {"shift": 0.0}}, run=CountingRun(), seeds=[0])
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        ablation.run_ablation(args["variants"], args["run"], args["seeds"], study="t")


def test_harness_drives_the_books_fit_loop(tmp_path):
    x = torch.rand(64, 3, 8, 8)
    y = (x[:, 0].mean((1, 2)) > 0.5).long()
    data = torch.utils.data.TensorDataset(x, y)
    trained = []

    def run(config, seed):
        model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 2))
        if config["conv"] == "frozen":
            model[0].requires_grad_(False)
        before = model[0].weight.detach().clone()
        params = [p for p in model.parameters() if p.requires_grad]
        helpers.fit(model, loader(data, 16, True, seed), epochs=2, optimizer=torch.optim.SGD(params, lr=0.1),
                    progress=False)
        trained.append(not torch.equal(before, model[0].weight))
        return {"acc": helpers.evaluate(model, loader(data, 64))["acc"]}

    variants = {"trained": {"conv": "trained"}, "frozen": {"conv": "frozen"}}
    first = ablation.run_ablation(variants, run, [0, 1], study="fit", cache_dir=tmp_path)
    assert trained == [True, False, True, False]
    again = ablation.run_ablation(variants, run, [0, 1], study="fit", cache_dir=tmp_path)
    assert again.skipped == 4 and len(trained) == 4
    assert list(first.summary("acc").columns[:3]) == ["mean", "std", "n"]


# ---------------------------------------------------------------- tables and plots

def _runs(values):
    """values: {variant: [metric per seed]} -> a runs table like run_ablation's."""
    rows = [{"variant": v, "seed": s, "acc": a} for v, accs in values.items() for s, a in enumerate(accs)]
    frame = pd.DataFrame(rows)
    frame["variant"] = pd.Categorical(frame["variant"], categories=list(values), ordered=True)
    return frame


def test_summary_mean_std_and_paired_difference():
    runs = _runs({"base": [0.5, 0.7, 0.6], "x": [0.6, 0.9, 0.6]})
    summary = ablation.summarize(runs, "acc", reference="base")
    assert list(summary.index) == ["base", "x"]
    assert summary.loc["x", "mean"] == pytest.approx(np.mean([0.6, 0.9, 0.6]))
    assert summary.loc["x", "std"] == pytest.approx(np.std([0.6, 0.9, 0.6], ddof=1))
    assert summary.loc["x", "n"] == 3
    assert summary.loc["x", "diff vs base"] == pytest.approx(0.1)
    assert summary.loc["x", "diff std"] == pytest.approx(np.std([0.1, 0.2, 0.0], ddof=1))
    with pytest.raises(ValueError, match="reference 'nope'"):
        ablation.summarize(runs, "acc", reference="nope")
    with pytest.raises(ValueError, match="Unknown metric 'loss'"):
        ablation.summarize(runs, "loss")


def test_component_effects_detects_interaction_only_when_present():
    def study(interaction):
        # acc = 0.5 + 0.1*a + 0.2*b + interaction*a*b, identical over two seeds plus a seed offset
        values = {}
        for name, (a, b) in {"none": (0, 0), "+a": (1, 0), "+b": (0, 1),
                             "all": (1, 1), "-a": (0, 1), "-b": (1, 0)}.items():
            values[name] = [0.5 + 0.1 * a + 0.2 * b + interaction * a * b + s for s in (0.0, 0.01)]
        return ablation.component_effects(_runs(values), "acc", ["a", "b"])

    additive = study(0.0)
    np.testing.assert_allclose(additive["gain alone"], [0.1, 0.2], atol=1e-12)
    np.testing.assert_allclose(additive["interaction"], 0.0, atol=1e-12)
    coupled = study(-0.15)  # e.g. two regularisers that do the same job: together worth less
    np.testing.assert_allclose(coupled["gain in full"], [-0.05, 0.05], atol=1e-12)
    np.testing.assert_allclose(coupled["interaction"], -0.15, atol=1e-12)
    with pytest.raises(ValueError, match="missing"):
        ablation.component_effects(_runs({"none": [0.1], "+a": [0.2]}), "acc", ["a"])


def test_bar_plot_has_one_bar_per_variant_and_a_caption():
    runs = _runs({"base": [0.5, 0.7], "x": [0.6, 0.9], "y": [0.1, 0.2]})
    fig = ablation.bar_plot(runs, "acc", reference="base", caption="stand-in data")
    ax = fig.axes[0]
    assert [round(p.get_height(), 6) for p in ax.patches] == [0.6, 0.75, 0.15]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["base", "x", "y"]
    assert any("stand-in" in t.get_text() for t in fig.texts)


# ---------------------------------------------------------------- evaluation-time ablation

def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 3)).eval()


def test_ablate_whole_module_equals_pruning_all_its_weights():
    model, x = _net(), torch.rand(5, 3, 4, 4)
    clean = model(x)
    with ablation.ablate(model, "0"):
        ablated = model(x)
    reference = _net()
    prune.custom_from_mask(reference[0], "weight", torch.zeros_like(reference[0].weight))
    prune.custom_from_mask(reference[0], "bias", torch.zeros_like(reference[0].bias))
    torch.testing.assert_close(ablated, reference(x))
    torch.testing.assert_close(model(x), clean)  # undone after the block


def test_ablate_channels_equals_pruning_those_output_channels():
    model, x = _net(), torch.rand(5, 3, 4, 4)
    with ablation.ablate(model, "0", channels=[1, 6]):
        ablated = model(x)
    reference = _net()
    keep = torch.ones(8)
    keep[[1, 6]] = 0
    prune.custom_from_mask(reference[0], "weight", keep.view(8, 1, 1, 1).expand_as(reference[0].weight))
    prune.custom_from_mask(reference[0], "bias", keep)
    torch.testing.assert_close(ablated, reference(x))


def test_ablate_fraction_zeroes_that_many_channels_reproducibly():
    model, x = _net(), torch.rand(2, 3, 4, 4)
    seen = []
    model[1].register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    for _ in range(2):
        with ablation.ablate(model, "0", channels=0.5, seed=3):
            model(x)
    zeroed = (seen[0].abs().sum((0, 2, 3)) == 0)
    assert int(zeroed.sum()) == 4
    torch.testing.assert_close(seen[0], seen[1])
    with ablation.ablate(model, "0", channels=0.0):
        torch.testing.assert_close(model(x), _net()(x))


def test_ablate_is_undone_even_after_an_error():
    model, x = _net(), torch.rand(2, 3, 4, 4)
    clean = model(x)
    with pytest.raises(RuntimeError, match="boom"):
        with ablation.ablate(model, ["0", "3"]):
            raise RuntimeError("boom")
    assert not model[0]._forward_hooks and not model[3]._forward_hooks
    torch.testing.assert_close(model(x), clean)


def test_ablated_trained_layer_lowers_accuracy():
    torch.manual_seed(0)
    x = torch.randn(400, 2)
    y = (x[:, 0] > 0).long()
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))
    data = torch.utils.data.TensorDataset(x, y)
    helpers.fit(model, loader(data, 50, True, 0), epochs=20, optimizer=torch.optim.Adam(model.parameters(), 0.02),
                progress=False)
    clean = helpers.evaluate(model, loader(data, 400))["acc"]
    with ablation.ablate(model, "0"):
        ablated = helpers.evaluate(model, loader(data, 400))["acc"]
    assert clean > 0.95 and ablated < 0.6


@pytest.mark.parametrize("kwargs, match", [
    (dict(targets="nope"), "no submodule named"),
    (dict(targets=[]), "no submodule named"),
    (dict(targets=""), "no submodule named"),
    (dict(targets="0", channels=1.5), "fraction must lie"),
    (dict(targets="0", channels=3), "list of channel indices"),
    (dict(targets="0", channels=["a"]), "list of channel indices"),
])
def test_ablate_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        with ablation.ablate(_net(), **kwargs):
            pass


def test_ablate_channel_out_of_range_is_reported_and_undone():
    model = _net()
    with pytest.raises(ValueError, match="must lie in 0..7"):
        with ablation.ablate(model, "0", channels=[8]):
            model(torch.rand(1, 3, 4, 4))
    assert not model[0]._forward_hooks


def test_summary_of_a_subset_keeps_only_its_variants():
    runs = _runs({"none": [0.1, 0.1], "+a": [0.3, 0.5], "all": [0.6, 0.7], "-a": [0.2, 0.2]})
    subset = runs[runs["variant"].isin(["all", "-a"])]
    summary = ablation.summarize(subset, "acc", reference="all")
    assert list(summary.index) == ["all", "-a"]
    assert summary.loc["-a", "diff vs all"] == pytest.approx(-0.45)
    assert [t.get_text() for t in ablation.bar_plot(subset, "acc").axes[0].get_xticklabels()] == ["all", "-a"]
