"""Partition-safe Delta writes: replace exactly the written partitions, never others."""

from __future__ import annotations

import polars as pl

from charassets.domain.lake import Lake


def frame(part: str, n: int, start: int = 0) -> pl.DataFrame:
    return pl.DataFrame({"partition": [part] * n, "x": list(range(start, start + n))})


def test_rewrite_replaces_only_its_partitions(tmp_path):
    lake = Lake(str(tmp_path))
    lake.write_partitions("s", "t", pl.concat([frame("a", 3), frame("b", 2), frame("c", 4)]), ["a", "b", "c"])
    lake.write_partitions("s", "t", pl.concat([frame("a", 5, 100), frame("b", 1, 100)]), ["a", "b"])  # multi-partition rewrite
    assert lake.partition_counts("s", "t") == {"a": 5, "b": 1, "c": 4}
    assert lake.read("s", "t", ["c"]).get_column("x").to_list() == [0, 1, 2, 3]
    lake.write_partitions("s", "t", frame("b", 0), ["b"])  # an empty result empties its partition
    assert lake.partition_counts("s", "t") == {"a": 5, "c": 4}


def test_rows_outside_the_written_partitions_are_refused(tmp_path):
    lake = Lake(str(tmp_path))
    try:
        lake.write_partitions("s", "t", frame("z", 1), ["a"])
    except ValueError as e:
        assert "outside" in str(e)
    else:
        raise AssertionError("expected a ValueError")
    assert not lake.exists("s", "t")
