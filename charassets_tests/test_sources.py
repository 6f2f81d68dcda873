"""Registering and reading sources: stable keys, bad rows quarantined, rows in = records + rejects."""

from __future__ import annotations

import json

import polars as pl
import pytest

from charassets.domain.sources import Chunk, SourcesConfig, SourceSpec, read_chunk, register


def read_all(spec: SourceSpec) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    reg = register(spec)
    parts = [read_chunk(Chunk.from_row(r), spec) for r in reg.iter_rows(named=True)]
    for (recs, rej), n in zip(parts, reg.get_column("row_count"), strict=True):
        assert recs.height + rej.height == n
    return reg, pl.concat([p[0] for p in parts]), pl.concat([p[1] for p in parts])


def test_jsonl_bad_rows_become_rejects_with_reasons(tmp_path):
    lines = [
        json.dumps({"id": 1, "tags": "1girl, solo"}),
        '{"id": 2, "tags": "1girl"',  # truncated
        "[3, 4]",
        json.dumps({"id": 4, "tags": 12}),
        json.dumps({"tags": "1girl"}),
        json.dumps({"id": 6, "tags": "  , , "}),
        json.dumps({"id": 1, "tags": "1boy"}),  # duplicate id
        "",
        json.dumps({"id": 8, "tags": ["1girl", "long hair"]}),  # a list of tags is fine
        b"\xff\xfe bad bytes".decode("latin-1"),
        json.dumps({"id": 10, "tags": "x, " * 20000}),
    ]
    (tmp_path / "a.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    reg, recs, rej = read_all(SourceSpec(name="t", uri=str(tmp_path / "a.jsonl"), rows_per_partition=100))
    assert reg.get_column("row_count").to_list() == [10]  # a blank line is not a record
    reg4, _, _ = read_all(SourceSpec(name="t", uri=str(tmp_path / "a.jsonl"), rows_per_partition=4))
    assert reg4.get_column("row_count").to_list() == [4, 4, 2]
    assert recs.get_column("source_id").to_list() == ["1", "8"]
    assert recs.filter(pl.col("source_id") == "8").item(0, "tags_raw") == "1girl,long hair"
    reasons = dict(zip(rej.get_column("row_index").to_list(), rej.get_column("reason").to_list(), strict=True))
    assert reasons[1].startswith("invalid JSON")
    assert reasons[2] == "row is a JSON list, expected an object"
    assert "expected text" in reasons[3]
    assert reasons[4].startswith("missing id")
    assert reasons[5] == "no tags"
    assert reasons[6] == "duplicate id (first seen at row 0)"
    assert reasons[8].startswith("invalid JSON")
    assert reasons[9].startswith("tag string longer")


def test_duplicate_ids_in_one_chunk(tmp_path):
    pl.DataFrame({"id": [1, 2, 1], "tags": ["1girl", "1boy", "solo"]}).write_parquet(tmp_path / "p.parquet")
    _, recs, rej = read_all(SourceSpec(name="t", uri=str(tmp_path / "p.parquet")))
    assert recs.get_column("record_id").to_list() == ["t:1", "t:2"]
    assert rej.select("row_index", "reason").rows() == [(2, "duplicate id (first seen at row 0)")]


def test_csv_with_quoted_newlines_and_ragged_rows(tmp_path):
    (tmp_path / "c.csv").write_text(
        'id,tags\n1,"1girl, long hair"\n2,"1boy,\nshort hair"\n3,too,many,fields\n4,\n5,solo\n', encoding="utf-8"
    )
    reg, recs, rej = read_all(SourceSpec(name="t", uri=str(tmp_path / "c.csv"), rows_per_partition=2))
    assert reg.get_column("row_count").sum() == 5
    assert recs.get_column("source_id").to_list() == ["1", "2", "5"]
    assert recs.item(1, "tags_raw") == "1boy,\nshort hair"
    assert rej.get_column("reason").to_list() == ["expected 2 fields, got 4", "no tags"]


def test_parquet_danbooru_layout_and_wrong_column_type(tmp_path):
    pl.DataFrame(
        {
            "id": [1, 2],
            "tag_string_general": ["1girl long_hair", "solo"],
            "tag_string_character": ["hatsune_miku", ""],
            "tag_string_copyright": ["vocaloid", ""],
            "tag_string_artist": ["", ""],
            "tag_string_meta": ["highres", ""],
            "rating": ["g", "s"],
        }
    ).write_parquet(tmp_path / "d.parquet")
    _, recs, rej = read_all(SourceSpec(name="d", uri=str(tmp_path / "d.parquet"), layout="danbooru"))
    assert recs.height == 2 and rej.height == 0 and recs.item(0, "character_raw") == "hatsune_miku"
    pl.DataFrame({"id": [1, 2], "tags": [3, 4]}).write_parquet(tmp_path / "bad.parquet")
    _, recs, rej = read_all(SourceSpec(name="b", uri=str(tmp_path / "bad.parquet")))
    assert recs.height == 0 and rej.get_column("reason").unique().to_list() == ["field 'tags' is Int64, expected text"]


def test_missing_column_is_a_clear_error(tmp_path):
    pl.DataFrame({"id": [1], "text": ["1girl"]}).write_parquet(tmp_path / "x.parquet")
    spec = SourceSpec(name="x", uri=str(tmp_path / "x.parquet"))
    with pytest.raises(ValueError, match=r"columns \['tags'\] not in"):
        read_chunk(Chunk.from_row(register(spec).row(0, named=True)), spec)


def test_partition_keys_are_stable_and_new_files_add_partitions(tmp_path):
    for i in range(2):
        pl.DataFrame({"id": range(i * 10, i * 10 + 10), "tags": ["1girl"] * 10}).write_parquet(tmp_path / f"part-{i}.parquet")
    spec = SourceSpec(name="s", uri=str(tmp_path / "*.parquet"), rows_per_partition=4)
    first = register(spec).get_column("partition").to_list()
    pl.DataFrame({"id": range(100, 105), "tags": ["1boy"] * 5}).write_parquet(tmp_path / "part-2.parquet")
    second = register(spec).get_column("partition").to_list()
    assert len(first) == 6 and second[:6] == first and len(second) == 8
    assert all(k.startswith("s-") for k in second)


def test_sources_file_resolves_relative_paths(tmp_path):
    (tmp_path / "data").mkdir()
    pl.DataFrame({"id": [1], "tags": ["1girl"]}).write_parquet(tmp_path / "data" / "a.parquet")
    (tmp_path / "sources.yaml").write_text("sources:\n  - name: mine\n    uri: data/*.parquet\n")
    cfg = SourcesConfig.from_yaml(tmp_path / "sources.yaml")
    assert register(cfg.get("mine")).height == 1
    with pytest.raises(ValueError):
        SourceSpec(name="Bad Name", uri="x")


def test_image_folders_register_per_folder_with_sidecar_tags(tmp_path):
    from PIL import Image

    root = tmp_path / "set"
    for folder, n in (("5_alice", 5), ("10_bob/close", 2)):
        (root / folder).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(root / folder / f"{i}.png")
    (root / "5_alice" / "1.txt").write_text("1girl, solo, red hair")
    (root / "5_alice" / "notes.md").write_text("not an image, not a record")
    spec = SourceSpec(name="kohya", uri=str(root), format="images", rows_per_partition=2)
    assert spec.rows_per_partition == 2 and SourceSpec(name="k", uri=str(root), format="images").rows_per_partition == 1000
    reg, recs, rej = read_all(spec)
    assert reg.get_column("row_count").to_list() == [2, 2, 2, 1] and rej.height == 0  # 10_bob/close, then 5_alice in 3 chunks
    tags = dict(recs.select("source_id", "tags_raw").iter_rows())
    assert tags["5_alice/1.png"] == "1girl, solo, red hair" and tags["5_alice/0.png"] is None
    assert recs.get_column("image_ref").to_list() == recs.get_column("source_id").to_list()
    assert register(spec).equals(reg)  # registering again gives the same partitions
    # a registered folder is immutable: reading one that changed fails clearly instead of shifting its chunks
    Image.new("RGB", (8, 8)).save(root / "5_alice" / "00.png")
    chunk = Chunk.from_row(reg.filter(pl.col("file").str.ends_with("5_alice")).row(0, named=True))
    with pytest.raises(ValueError, match="changed since it was registered"):
        read_chunk(chunk, spec)


def test_table_sources_need_tags_or_decoded_images():
    with pytest.raises(ValueError, match="names no tag column"):
        SourceSpec(name="t", uri="x.parquet", columns={"id": "id", "image": "image"})
    spec = SourceSpec(name="t", uri="x.parquet", columns={"id": "id", "image": "image"}, images=True)
    assert spec.decodes_images and spec.rows_per_partition == 1000
    with pytest.raises(ValueError, match="names no image column"):
        SourceSpec(name="t", uri="x.parquet", columns={"id": "id", "tags": "tags"}, images=True)


def test_every_format_the_config_accepts_has_a_reader_and_an_unknown_one_names_them():
    from charassets.domain.sources import READERS, SourceReader

    assert {"parquet", "jsonl", "csv", "images"} <= set(READERS)
    for name, reader in READERS.items():
        assert isinstance(reader, SourceReader), name
        columns = None if reader.layout else {"id": "id", "tags": "tags"}
        assert SourceSpec(name="t", uri="x", format=name, columns=columns).format_of("any.file") == name
        for suffix in reader.suffixes:  # a source that names no format: the file's suffix picks the reader
            assert SourceSpec(name="t", uri="x").format_of(f"a{suffix.upper()}") == name
    registered = ", ".join(sorted(READERS))
    with pytest.raises(ValueError, match=f"unknown source format 'xml': the registered formats are {registered}"):
        SourceSpec(name="t", uri="x.xml", format="xml")
    chunk = Chunk(partition="t-0-0000", source="t", file="x.xml", format="xml", row_start=0, row_count=1, byte_start=0, byte_end=1)
    with pytest.raises(ValueError, match=f"registered formats are {registered}"):  # a registry row of no known format fails the run
        read_chunk(chunk, SourceSpec(name="t", uri="x.xml"))


def test_an_image_only_table_has_records_without_tags(tmp_path):
    """A table naming only an id and an image column: each row is a record that lives by its image, none rejected as 'no tags'."""
    pl.DataFrame({"id": ["a", "b", "c"], "image": [{"bytes": b"x", "path": None}, {"bytes": None, "path": "b.png"}, None]}).write_parquet(
        tmp_path / "rows.parquet"
    )
    spec = SourceSpec(name="pics", uri=str(tmp_path / "rows.parquet"), images=True, columns={"id": "id", "image": "image"})
    reg = register(spec)
    records, rejects = read_chunk(Chunk.from_row(reg.row(0, named=True)), spec)
    assert records.height + rejects.height == 3
    assert sorted(records.get_column("source_id").to_list()) == ["a", "b"]
    assert rejects.get_column("reason").to_list() == ["no tags and no image"]
