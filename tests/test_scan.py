"""Sharded scans: shards, merging, and top-patches under torchrun equal to one process."""

import json

import pytest

from cnntool.core.sharding import Shard, gather, merged_skipped


def test_shards_are_strided_disjoint_and_complete():
    shards = [Shard(rank, 3) for rank in range(3)]
    parts = [s.indices(10) for s in shards]
    assert parts == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert sorted(i for p in parts for i in p) == list(range(10))
    assert Shard(1, 3).indices(10, start=2) == [7]
    assert Shard().is_main and not Shard().distributed


def test_single_process_gather_is_the_object_itself():
    assert gather({"a": 1}, Shard()) == [{"a": 1}]
    assert merged_skipped([("b", "x"), ("a", "y")], Shard()) == [("a", "y"), ("b", "x")]


@pytest.mark.slow
@pytest.mark.torchrun
def test_torchrun_two_cpu_ranks_equal_one_process(tmp_path, cnntool):
    args = [
        "visualize",
        "top-patches",
        "lenet5-mnist",
        "imagenet-samples",
        "--layer",
        "conv2",
        "--units",
        "0-5",
        "--top",
        "4",
        "--batch-size",
        "3",
        "-q",
    ]
    single = cnntool(*args, "-o", tmp_path / "one", threads=1)
    assert single.returncode == 0, single.stderr
    loud = [a for a in args if a != "-q"]  # rank 0's progress shows its shard: 10 of 20 images
    double = cnntool.torchrun(*loud, "-o", tmp_path / "two")
    assert double.returncode == 0, double.stderr
    assert "10/10" in double.stderr and "20 images scanned" in double.stderr
    one = [json.loads(line) for line in single.stdout.splitlines()]
    two = [json.loads(line) for line in double.stdout.splitlines()]  # rank 0 alone writes
    assert len(one) == 6 * 4 and two == one
    for name in ["overview.png"] + [f"unit_{u:04d}.png" for u in range(6)]:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
