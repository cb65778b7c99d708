"""helpers.files: atomic writes never leave half a file; unreadable JSON records read as absent."""
import os

import pytest
import torch

from helpers.files import load_json, save_json, save_torch


def test_save_torch_keeps_the_old_file_on_failure_and_uses_normal_permissions(tmp_path):
    path = tmp_path / "weights.pt"
    save_torch({"w": torch.ones(2)}, path)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's owner-only 0600

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        save_torch({"w": Unpicklable()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(2))  # the old file survives
    assert not list(tmp_path.glob("*.tmp"))


def test_json_records_round_trip_and_a_failed_write_keeps_the_old_one(tmp_path):
    path = tmp_path / "sub" / "record.json"
    save_json({"b": [1, 2.5], "a": "x"}, path)
    assert load_json(path) == {"a": "x", "b": [1, 2.5]}
    with pytest.raises(TypeError):
        save_json({"a": object()}, path)
    assert load_json(path) == {"a": "x", "b": [1, 2.5]}
    assert not list(path.parent.glob("*.tmp"))


def test_absent_unreadable_or_non_object_json_reads_as_none(tmp_path):
    assert load_json(tmp_path / "missing.json") is None
    (tmp_path / "half.json").write_text('{"a": 1')
    assert load_json(tmp_path / "half.json") is None
    (tmp_path / "list.json").write_text("[1, 2]")
    assert load_json(tmp_path / "list.json") is None
