"""Partition-safe Delta writes: replace exactly the written partitions, never others."""

from __future__ import annotations

import polars as pl
from deltalake import DeltaTable

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


def test_writes_to_an_existing_table_are_polars_files_in_one_delta_commit(tmp_path, monkeypatch):
    """After the table exists, polars writes the files and delta-rs commits them: the same rows, versions and
    partition replacement as delta-rs's own writer, files delta-rs itself compacts and deletes from; a frame with
    a new column goes through delta-rs's writer (schema merge)."""
    import charassets.domain.lake as lake_module

    calls = []
    real = lake_module.write_deltalake
    monkeypatch.setattr(lake_module, "write_deltalake", lambda *a, **k: calls.append(k.get("mode")) or real(*a, **k))
    lake = Lake(str(tmp_path))
    lake.write_partitions("s", "t", pl.concat([frame("a", 3), frame("b", 2)]), ["a", "b"])
    assert calls == ["overwrite"]  # a new table: delta-rs's writer
    lake.write_partitions("s", "t", frame("a", 4, 10), ["a"])
    lake.write_partitions("s", "t", pl.concat([frame("b", 2, 20), frame("c", 1, 30)]), ["b", "c"])
    lake.write_partitions("s", "t", frame("c", 0).cast({"partition": pl.String, "x": pl.Int64}), ["c"])
    assert calls == ["overwrite"]  # existing table, same schema: no delta-rs writer
    assert lake.partition_counts("s", "t") == {"a": 4, "b": 2}
    assert sorted(lake.read("s", "t").get_column("x").to_list()) == [10, 11, 12, 13, 20, 21]
    dt = DeltaTable(lake.uri("s", "t"))
    assert dt.version() == 3 and len(dt.file_uris()) == 2
    assert pl.read_parquet(dt.file_uris()[0]).columns == ["x"]  # the partition lives in the path, as delta-rs writes it
    lake.write_partitions("s", "t", frame("d", 2).with_columns(pl.lit("y").alias("extra")), ["d"])
    assert calls == ["overwrite", "overwrite"]  # a new column: delta-rs's writer merges the schema
    assert lake.read("s", "t", ["a"]).get_column("extra").null_count() == 4
    assert lake.delete_partitions("s", "t", ["b"]) == 2  # delta-rs reads the files polars wrote
    assert lake.maintain("s", "t", retention_hours=0)["files_after"] == 2
    assert lake.partition_counts("s", "t") == {"a": 4, "d": 2}


def test_tables_the_lake_creates_are_checkpointed_every_ten_commits(tmp_path):
    """Opening a table replays its log since the last checkpoint: tables written partition by partition keep it short."""
    lake = Lake(str(tmp_path))
    for i in range(12):  # version 0 creates the table (delta-rs's writer), the rest are polars files committed by delta-rs
        lake.write_partitions("s", "t", frame(f"p{i}", 3), [f"p{i}"])
    lake.write_table("s", "whole", frame("a", 2))
    log = tmp_path / "s" / "t" / "_delta_log"
    assert sorted(p.name for p in log.glob("*.checkpoint.parquet")) == ["00000000000000000009.checkpoint.parquet"]
    assert DeltaTable(str(tmp_path / "s" / "t")).metadata().configuration == {"delta.checkpointInterval": "10"}
    assert DeltaTable(str(tmp_path / "s" / "whole")).metadata().configuration == {"delta.checkpointInterval": "10"}
    assert lake.partition_counts("s", "t") == {f"p{i}": 3 for i in range(12)}


def test_maintenance_gives_a_table_created_before_the_properties_those_it_lacks(tmp_path):
    from deltalake import write_deltalake

    lake = Lake(str(tmp_path))
    write_deltalake(str(tmp_path / "s" / "old"), frame("a", 2).to_arrow(), partition_by=["partition"])  # as an older lake made it
    write_deltalake(
        str(tmp_path / "s" / "own"), frame("a", 2).to_arrow(), partition_by=["partition"], configuration={"delta.checkpointInterval": "50"}
    )
    lake.maintain("s", "old", retention_hours=0)
    lake.maintain("s", "own", retention_hours=0)
    assert DeltaTable(str(tmp_path / "s" / "old")).metadata().configuration == {"delta.checkpointInterval": "10"}
    assert DeltaTable(str(tmp_path / "s" / "own")).metadata().configuration == {"delta.checkpointInterval": "50"}  # kept
    assert lake.partition_counts("s", "old") == {"a": 2}
