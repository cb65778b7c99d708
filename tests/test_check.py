"""helpers.check: every check passes correct solutions and fails each typical mistake with a hint, never a traceback.

The solutions and the typical mistakes live next to their checks (SOLUTIONS and MISTAKES in
helpers/check/chNN.py); this file runs those of every chapter module it finds, so a new chapter adds
nothing here.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers import check, interpret, reference
from helpers.check import ch06, grading

EXERCISES = [name for chapter in check.CHAPTERS for name in chapter.__all__]


def run(check_fn, fn, capsys) -> tuple[bool, str]:
    """The check's result and everything it printed."""
    result = check_fn(fn)
    return result, capsys.readouterr().out


def assert_passes(check_fn, fn, capsys):
    result, out = run(check_fn, fn, capsys)
    assert result is True, out
    assert check.FAIL not in out, out


def assert_fails(check_fn, fn, capsys, says=(), never=()):
    """A failing verdict with a hint, these words in the output and those not."""
    result, out = run(check_fn, fn, capsys)
    assert result is False, out
    assert check.FAIL in out and "Hint:" in out, out
    assert "Traceback" not in out, out
    for words in says:
        assert words.lower() in out.lower(), f"{words!r} not in:\n{out}"
    for words in never:
        assert words not in out, f"{words!r} in:\n{out}"


def not_implemented(*args, **kwargs):
    raise NotImplementedError


@pytest.mark.parametrize("name,fn", [pytest.param(name, fn, id=f"{name}-{i}")
                                     for name, fns in check.SOLUTIONS.items() for i, fn in enumerate(fns)])
def test_check_passes_a_correct_solution(name, fn, capsys):
    assert_passes(getattr(check, name), fn, capsys)


@pytest.mark.parametrize("mistake", [pytest.param(m, id=f"{m.check}-{i}") for i, m in enumerate(check.MISTAKES)])
def test_check_fails_a_typical_mistake_with_a_hint(mistake, capsys):
    assert_fails(getattr(check, mistake.check), mistake.wrong, capsys, mistake.words, mistake.never)


@pytest.mark.parametrize("name", EXERCISES)
def test_check_says_not_implemented_yet(name, capsys):
    assert_fails(getattr(check, name), not_implemented, capsys, ["not implemented yet"])


def test_every_chapter_module_lists_solutions_and_typical_mistakes_for_each_check():
    assert check.CHAPTERS and len(EXERCISES) == len(set(EXERCISES))
    for chapter in check.CHAPTERS:
        names = set(chapter.__all__)
        assert names and all(callable(getattr(check, name)) for name in names), chapter.__name__
        assert set(chapter.SOLUTIONS) == names, chapter.__name__
        assert {m.check for m in chapter.MISTAKES} == names, chapter.__name__
        for name in names:
            assert sum(m.check == name for m in chapter.MISTAKES) >= 2, f"{chapter.__name__}.{name}"


# ---------------------------------------------------------------- the framework and the checks' own data

def test_compare_gives_each_call_its_own_copy_of_the_arguments(capsys):
    def mutates(logits, target, epsilon):
        loss = F.cross_entropy(logits, target, label_smoothing=epsilon)
        logits.mul_(2)  # the reference must not see this
        target.zero_()
        return loss

    assert_passes(check.label_smoothing, mutates, capsys)


def test_separation_index_tie_cases_are_exact_for_any_rounding_of_the_std():
    """The grid's ties hold whatever the std's last bits: a student's z-score may round differently."""
    x, y = ch06._tie_grid()
    for scale in (1.0, 1.0 + 2 ** -52, 1.0 - 2 ** -53, 3.0):
        z = x / (x.std(0) * scale + 1e-10)
        d = ((z[:, None] - z[None]) ** 2).sum(-1)
        d.fill_diagonal_(float("inf"))
        tied = (d == d.min(1, keepdim=True).values).sum(1)
        assert (tied == 2).sum() == 18  # every interior point of the first column: left and right neighbour
    assert reference.separation_index(x, y) != reference.separation_index(x, y, ties="highest")
    x, y = ch06._duplicates()
    assert reference.separation_index(x, y) != reference.separation_index(x, y, ties="highest")
    x, y = ch06._tied_centroids()
    assert reference.center_separation_index(x, y) != reference.center_separation_index(x, y, ties="highest")


def test_grad_cam_layers_are_upsampled():
    model = grading.conv_net(inplace=True)
    x, _ = grading.images(1)
    shapes = {name: out.shape[-2:] for name, out in interpret.activations(model, x, ["conv2", "pool"]).items()}
    assert shapes == {"conv2": (8, 8), "pool": (4, 4)}


def test_models_handed_to_the_student_are_in_train_mode_with_gradients():
    for model in (grading.conv_net(), grading.shared_relu_net()):
        assert model.training and all(p.grad is not None for p in model.parameters())
        assert next(model.parameters()).dtype == torch.float64
