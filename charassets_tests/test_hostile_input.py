"""Hostile input: no row lost, no run crashed by content, no instance trusted over the lake.

One regression test per finding of the hostile-input review (CSV grammar, row-level
failures, tag parsing, partition identity and ``--missing``, side files and vacuum), then
a property-based suite (Hypothesis) that mutates valid files of every format byte by byte
and checks the accounting through every stage: rows in = rows out + rows quarantined.
``CHARASSETS_HYPOTHESIS_EXAMPLES`` raises the example count outside CI (see the README).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import dagster as dg
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charassets.cli import main
from charassets.definitions import build_definitions
from charassets.domain.lake import Lake
from charassets.domain.ontology import Ontology
from charassets.domain.pipeline import clean_stage, label_stage, mart_stage
from charassets.domain.sources import Chunk, SourcesConfig, read_chunk, register
from charassets.domain.tags.vocabulary import Vocabulary
from charassets.runner import run_partitions
from charassets_tests.conftest import lake_env

EXAMPLES = int(os.environ.get("CHARASSETS_HYPOTHESIS_EXAMPLES", "30"))


def _source(tmp_path: Path, name: str, body: bytes | None = None, rows_per_partition: int = 3, **extra) -> SourcesConfig:
    if body is not None:
        (tmp_path / name).write_bytes(body)
    spec = {"name": "s", "uri": str(tmp_path / name), "rows_per_partition": rows_per_partition, **extra}
    if name.endswith((".csv", ".jsonl", ".parquet")):
        spec["columns"] = {"id": "id", "tags": "tags"}
    return SourcesConfig.model_validate({"sources": [spec]})


def _through_every_stage(cfg: SourcesConfig, vocabulary: Vocabulary, ontology: Ontology) -> dict[str, int]:
    """Register, read, clean, label and build the final table per chunk, as the assets do; the accounting."""
    spec = cfg.sources[0]
    registry = register(spec)
    totals = {"registered": 0, "records": 0, "rejects": 0, "final": 0}
    for row in registry.iter_rows(named=True):
        records, rejects = read_chunk(Chunk.from_row(row), spec)
        assert rejects.filter(pl.col("reason").is_null() | (pl.col("reason") == "")).height == 0  # every reason said
        clean, _ = clean_stage(records, spec, vocabulary)
        final = mart_stage(label_stage(clean, ontology), rejects, ontology)
        final.to_arrow()  # writable: every string encodes (a lone surrogate used to fail the write)
        totals["registered"] += row["row_count"]
        totals["records"] += records.height
        totals["rejects"] += rejects.height
        totals["final"] += final.height
    return totals


# ---------------------------------------------------------------------------- 1. CSV grammar


def test_a_stray_quote_inside_a_csv_field_loses_no_row(tmp_path, embedded_vocabulary, ontology):
    rows = [f'{i},"1girl, solo, long hair"' for i in range(10)]
    rows[3] = '3,1girl "smile'  # a quote in the middle of an unquoted field is a character, not a field opener
    cfg = _source(tmp_path, "posts.csv", ("id,tags\n" + "\n".join(rows) + "\n").encode())
    registry = register(cfg.sources[0])
    assert registry.get_column("row_count").to_list() == [3, 3, 3, 1]  # every chunk bounded, every row registered
    totals = _through_every_stage(cfg, embedded_vocabulary, ontology)
    assert totals == {"registered": 10, "records": 10, "rejects": 0, "final": 10}
    records = pl.concat([read_chunk(Chunk.from_row(r), cfg.sources[0])[0] for r in registry.iter_rows(named=True)])
    assert records.filter(pl.col("source_id") == "3").get_column("tags_raw").item() == '1girl "smile'


@pytest.mark.parametrize("per", [1, 2, 10])
def test_a_quote_never_closed_does_not_swallow_the_rows_after_it(tmp_path, embedded_vocabulary, ontology, per):
    cfg = _source(tmp_path, "open.csv", b'id,tags\n1,"1girl, smile\n2,1boy\n3,1girl\n', rows_per_partition=per)
    totals = _through_every_stage(cfg, embedded_vocabulary, ontology)
    assert totals == {"registered": 3, "records": 2, "rejects": 1, "final": 3}
    chunks = [Chunk.from_row(r) for r in register(cfg.sources[0]).iter_rows(named=True)]
    rejects = pl.concat([read_chunk(c, cfg.sources[0])[1] for c in chunks])
    assert rejects.get_column("reason").to_list() == ["invalid CSV: a quoted field is never closed"]


def test_a_stray_quote_in_the_first_row_still_extracts_every_row(tmp_path):
    src = tmp_path / "in.csv"
    src.write_text('id,tags\n1,1girl "smile\n2,"1girl, solo"\n3,"2girls, multiple girls"\n')
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(main, ["extract", "--input", str(src), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["1", "2", "3"]


# ---------------------------------------------------------------------------- 2. one bad row fails nothing


def test_rows_that_break_parsers_become_rejects_with_reasons(tmp_path, embedded_vocabulary, ontology):
    lines = [
        json.dumps({"id": "ok1", "tags": "1girl, solo"}),
        '{"id": "deep", "tags": ' + "[" * 100_000 + "]" * 100_000 + "}",  # RecursionError in json
        '{"id": "surrogate", "tags": "1girl, \\ud800"}',  # a lone surrogate: not encodable as UTF-8
        '{"id": "bignum", "tags": "1girl", "n": 1' + "0" * 5000 + "}",  # int too large to parse
        json.dumps({"id": "ok2", "tags": "1boy, solo"}),
    ]
    cfg = _source(tmp_path, "posts.jsonl", ("\n".join(lines) + "\n").encode(), rows_per_partition=10)
    totals = _through_every_stage(cfg, embedded_vocabulary, ontology)
    assert totals == {"registered": 5, "records": 2, "rejects": 3, "final": 5}
    records, rejects = read_chunk(Chunk.from_row(register(cfg.sources[0]).row(0, named=True)), cfg.sources[0])
    reasons = rejects.sort("row_index").get_column("reason").to_list()
    assert "nested too deeply" in reasons[0] and "not valid Unicode" in reasons[1] and reasons[2].startswith("invalid JSON")
    lake = Lake(str(tmp_path / "lake"))  # and both frames can be written (the surrogate used to fail here)
    lake.write_partitions("raw", "records", records, [records.get_column("partition")[0]])
    lake.write_partitions("raw", "rejects", rejects, [rejects.get_column("partition")[0]])


def test_a_huge_csv_field_is_a_reject_not_a_crash(tmp_path, embedded_vocabulary, ontology):
    body = "id,tags\n1,1girl\n2," + "a" * 200_000 + "\n3,1boy\n"
    cfg = _source(tmp_path, "posts.csv", body.encode(), rows_per_partition=10)
    totals = _through_every_stage(cfg, embedded_vocabulary, ontology)
    assert totals == {"registered": 3, "records": 2, "rejects": 1, "final": 3}


def test_a_file_that_is_not_parquet_is_one_quarantined_row(tmp_path, embedded_vocabulary, ontology):
    cfg = _source(tmp_path, "broken.parquet", b"PAR1 this is not a parquet file")
    totals = _through_every_stage(cfg, embedded_vocabulary, ontology)
    assert totals == {"registered": 1, "records": 0, "rejects": 1, "final": 1}


def test_a_parquet_file_with_corrupt_pages_quarantines_its_rows(tmp_path, embedded_vocabulary, ontology):
    rows = [{"id": str(i), "tags": f"1girl, solo, tag{i}"} for i in range(40)]
    data = bytearray(_parquet_bytes(rows, tmp_path))
    data[8:400] = b"\xff" * 392  # the data pages, not the footer: registration reads it, the readers cannot
    cfg = _source(tmp_path, "pages.parquet", bytes(data), rows_per_partition=40)
    totals = _through_every_stage(cfg, embedded_vocabulary, ontology)
    assert totals["registered"] == 40 == totals["records"] + totals["rejects"] == totals["final"] and totals["rejects"] > 0


# ---------------------------------------------------------------------------- 5. tag parsing


def test_overlong_tokens_are_flagged_not_parsed(embedded_vocabulary):
    from charassets.domain.pipeline import extract_one
    from charassets.domain.tags.cleaning import MAX_TOKEN_CHARS, OVERLONG, strip_weight

    token = "(" * 32_000
    assert strip_weight(token) == token  # never parsed: the parse of a token is bounded by MAX_TOKEN_CHARS
    record = extract_one(f"1girl, solo, long hair, {token}", vocabulary=embedded_vocabulary)
    assert "overlong_tag" in record["flags"] and record["attributes"]["Hair Length"]["value"] == "long"
    assert len(OVERLONG) < MAX_TOKEN_CHARS


# ---------------------------------------------------------------------------- 9. the lake decides, content names partitions


def _jsonl_source(root: Path, rows: list[dict], rows_per_partition: int = 4) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "posts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "sources.yaml").write_text(
        json.dumps(
            {
                "sources": [
                    {"name": "p", "uri": "posts.jsonl", "columns": {"id": "id", "tags": "tags"}, "rows_per_partition": rows_per_partition}
                ]
            }
        )
    )
    return root / "sources.yaml"


def test_a_file_replaced_under_its_name_is_new_partitions_and_the_old_are_retired(tmp_path):
    sources = _jsonl_source(tmp_path / "data", [{"id": str(i), "tags": "1girl, solo, red hair"} for i in range(8)])
    env = lake_env(tmp_path, sources)
    with dg.DagsterInstance.ephemeral() as instance:
        run_partitions(build_definitions(env), instance, log_level="WARNING")
        lake = Lake(env["CHARASSETS_LAKE"])
        old_keys = set(lake.partition_counts("marts", "character_attributes"))
        _jsonl_source(tmp_path / "data", [{"id": str(i), "tags": "1boy, solo, blue hair"} for i in range(6)])  # same name, new content
        run_partitions(build_definitions(env), instance, log_level="WARNING", only_missing=True)
        new_keys = set(lake.partition_counts("marts", "character_attributes"))
        assert old_keys.isdisjoint(new_keys) and not old_keys & set(instance.get_dynamic_partitions("record_chunks"))
        final = lake.read("marts", "character_attributes")
        assert final.height == 6 and set(final.select(pl.col("hair_color").struct.field("value")).to_series()) == {"blue"}
        for stage, table in [("raw", "records"), ("clean", "tags"), ("labels", "tag_attributes")]:
            assert set(lake.partition_counts(stage, table)) == new_keys  # nothing of the old file left anywhere
        exported = {
            p.name.removesuffix(".jsonl.gz") for p in (Path(lake.root) / "exports" / "character_attributes" / "jsonl").glob("*.jsonl.gz")
        }
        assert exported == new_keys  # nor among the exports


def test_missing_is_decided_by_the_lake_not_the_event_log(tmp_path):
    from charassets.runner import complete_partitions

    sources = _jsonl_source(tmp_path / "data", [{"id": str(i), "tags": "1girl, solo"} for i in range(12)])
    env = lake_env(tmp_path, sources)
    with dg.DagsterInstance.ephemeral() as instance:
        run_partitions(build_definitions(env), instance, log_level="WARNING")
        lake = Lake(env["CHARASSETS_LAKE"])
        keys = sorted(lake.partition_counts("marts", "character_attributes"))
        assert complete_partitions(lake) == set(keys)
        lake.delete_partitions("marts", "character_attributes", [keys[1]])  # as a build killed before publishing it leaves it
        assert complete_partitions(lake) == set(keys) - {keys[1]}  # the event log still says it is done
        report = run_partitions(build_definitions(env), instance, log_level="WARNING", only_missing=True)
        assert report.partitions == [keys[1]]
        assert lake.partition_counts("marts", "character_attributes") == {k: 4 for k in keys}
    # a fresh lake with an instance that has seen the same keys: everything is missing, nothing crashes
    with dg.DagsterInstance.ephemeral() as instance:
        other = {**env, "CHARASSETS_LAKE": str(tmp_path / "other_lake")}
        run_partitions(build_definitions(env), instance, log_level="WARNING")
        report = run_partitions(build_definitions(other), instance, log_level="WARNING", only_missing=True)
        assert sorted(report.partitions) == keys and Lake(other["CHARASSETS_LAKE"]).read("marts", "character_attributes").height == 12


def test_the_cli_never_takes_a_dagster_yaml_from_a_foreign_working_directory(tmp_path, monkeypatch):
    from charassets.cli import _dagster_home

    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("CHARASSETS_HOME", str(tmp_path / "home"))
    _dagster_home()
    assert os.environ["DAGSTER_HOME"] == str((tmp_path / "home" / "dagster_home").resolve())


def test_instance_storage_follows_dagster_home(tmp_path, monkeypatch):
    root = Path(__file__).resolve().parents[1]
    home = tmp_path / "elsewhere"
    home.mkdir()
    (home / "dagster.yaml").write_text((root / "dagster.yaml").read_text())
    monkeypatch.chdir(root)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("probe", ["x"])
    assert (home / "storage").is_dir() or (home / "history").is_dir()


# ---------------------------------------------------------------------------- 10. side files and vacuum


def test_two_publishers_of_one_side_file_never_clobber_each_other(tmp_path):
    from charassets.defs.resources import LakeResource

    lake = LakeResource(root=str(tmp_path))
    errors: list[BaseException] = []

    def publish(text: str) -> None:
        try:
            for _ in range(200):
                lake.write_text("exports/schema.json", text)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    a, b = json.dumps({"who": "a" * 5000}), json.dumps({"who": "b" * 5000})
    threads = [threading.Thread(target=publish, args=(t,)) for t in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and (tmp_path / "exports" / "schema.json").read_text() in (a, b)
    assert not list((tmp_path / "exports").glob("*.tmp"))


def test_vacuum_with_no_retention_is_refused_unless_no_writer_runs():
    result = CliRunner().invoke(main, ["maintain", "--retention-hours", "0"])
    assert result.exit_code == 2 and "not yet committed" in result.output


# ---------------------------------------------------------------------------- the property-based suite


def _valid_rows(n: int) -> list[dict]:
    looks = ["long hair, blue eyes", "short hair, red hair", "twintails, smile", "no humans, scenery", "2girls, multiple girls"]
    return [{"id": str(i), "tags": f"1girl, solo, {looks[i % len(looks)]}"} for i in range(n)]


def _csv_bytes(rows: list[dict]) -> bytes:
    return ("id,tags\n" + "".join(f'{r["id"]},"{r["tags"]}"\n' for r in rows)).encode()


def _jsonl_bytes(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _parquet_bytes(rows: list[dict], tmp: Path) -> bytes:
    pq.write_table(pa.Table.from_pylist(rows), tmp / "valid.parquet", row_group_size=4)
    return (tmp / "valid.parquet").read_bytes()


MUTATIONS = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(
        st.just("insert"), st.floats(0, 1), st.sampled_from([b'"', b"\x00", b"\xff\xfe", b"\n", b",", b"\\", b"{", b"\r", b"\xed\xa0\x80"])
    ),
    st.tuples(st.just("huge_field"), st.floats(0, 1), st.integers(1_000, 200_000)),
    st.tuples(st.just("nesting"), st.floats(0, 1), st.integers(100, 50_000)),
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(0, 255)),
    st.tuples(st.just("duplicate_line"), st.floats(0, 1)),
    st.tuples(st.just("wrong_type"), st.floats(0, 1)),
)


def _mutate(data: bytes, mutations: list[tuple]) -> bytes:
    for m in mutations:
        at = int(m[1] * len(data))
        if m[0] == "truncate":
            data = data[:at]
        elif m[0] == "insert":
            data = data[:at] + m[2] + data[at:]
        elif m[0] == "huge_field":
            data = data[:at] + b"x" * m[2] + data[at:]
        elif m[0] == "nesting":
            data = data[:at] + b"[" * m[2] + data[at:]
        elif m[0] == "flip" and data:
            at = min(at, len(data) - 1)
            data = data[:at] + bytes([m[2]]) + data[at + 1 :]
        elif m[0] == "duplicate_line":
            lines = data.split(b"\n")
            i = min(int(m[1] * len(lines)), len(lines) - 1)
            data = b"\n".join(lines[: i + 1] + [lines[i]] + lines[i + 1 :])
        elif m[0] == "wrong_type":
            data = data.replace(b'"tags": "', b'"tags": 12345, "x": "', 1) if b'"tags": "' in data else data + b"\n12345\n"
    return data


@pytest.fixture(scope="module")
def vocabulary() -> Vocabulary:
    return Vocabulary.embedded()


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(n=st.integers(1, 12), mutations=st.lists(MUTATIONS, min_size=1, max_size=3), per=st.integers(1, 5))
def test_mutated_files_lose_no_row(fmt, n, mutations, per, tmp_path_factory, vocabulary, ontology):
    tmp = tmp_path_factory.mktemp(fmt)
    rows = _valid_rows(n)
    valid = {"csv": _csv_bytes, "jsonl": _jsonl_bytes}[fmt](rows) if fmt != "parquet" else _parquet_bytes(rows, tmp)
    cfg = _source(tmp, f"posts.{fmt}", _mutate(valid, mutations), rows_per_partition=per)
    totals = _through_every_stage(cfg, vocabulary, ontology)
    assert totals["registered"] == totals["records"] + totals["rejects"] == totals["final"]


@settings(
    max_examples=max(EXAMPLES // 3, 5), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(mutations=st.lists(MUTATIONS, min_size=1, max_size=2), which=st.integers(0, 5), sidecar=st.booleans())
def test_mutated_image_folders_lose_no_image(mutations, which, sidecar, tmp_path_factory, vocabulary, ontology):
    from PIL import Image

    from charassets.domain.images.stage import images_stage

    folder = tmp_path_factory.mktemp("images")
    for i in range(6):
        Image.new("RGB", (32 + i, 32), (40 * i, 90, 200)).save(folder / f"img{i}.png")
        (folder / f"img{i}.txt").write_text("1girl, solo, blue hair")
    target = folder / (f"img{which}.txt" if sidecar else f"img{which}.png")
    target.write_bytes(_mutate(target.read_bytes(), mutations))
    cfg = SourcesConfig.model_validate({"sources": [{"name": "s", "uri": str(folder), "format": "images", "rows_per_partition": 4}]})
    spec = cfg.sources[0]
    totals = _through_every_stage(cfg, vocabulary, ontology)
    assert totals["registered"] == totals["records"] + totals["rejects"] == totals["final"] == 6
    for row in register(spec).iter_rows(named=True):
        chunk = Chunk.from_row(row)
        records, _ = read_chunk(chunk, spec)
        images, image_rejects = images_stage(records, chunk, spec)
        referenced = records.filter(pl.col("image_ref").is_not_null()).height
        assert images.height + image_rejects.height == referenced
        assert image_rejects.filter(pl.col("reason").str.len_chars() == 0).height == 0
