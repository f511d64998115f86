"""Outputs are written atomically: all or nothing, with ordinary permissions."""

import os

import pytest

from cnntool.io.records import csv_text, jsonl_line
from cnntool.io.writers import atomic_path, open_output


def test_atomic_write_is_all_or_nothing(tmp_path):
    target = tmp_path / "out" / "result.jsonl"
    with open_output(target) as handle:
        handle.write("first\n")
    assert target.read_text() == "first\n"
    with pytest.raises(RuntimeError), open_output(target) as handle:
        handle.write("half of a second version")
        raise RuntimeError("interrupted")
    assert target.read_text() == "first\n"  # the old file is intact
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.jsonl"]  # no temp left


def test_outputs_get_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "a.png") as temp:
            temp.write_bytes(b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.png").stat().st_mode & 0o777 == 0o644


def test_records_are_plain_json_and_csv():
    assert jsonl_line({"shape": (1, 2), "bad": float("nan")}) == '{"shape":[1,2],"bad":null}'
    assert csv_text([{"a": 1, "b": [1, 2]}, {"a": 2, "b": None}]) == 'a,b\n1,"[1,2]"\n2,\n'
