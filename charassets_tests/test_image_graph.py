"""Images through the Dagster graph: an image folder (kohya sidecars) and a Parquet image column, made here, to the final table."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import shutil
import threading

import dagster as dg
import numpy as np
import polars as pl
import pytest
from PIL import Image

from charassets.definitions import build_definitions
from charassets.domain.candidates import decide
from charassets.domain.models import registry as registry
from charassets.domain.pipeline import clean_stage, image_facts, label_stage
from charassets.domain.schema import record_model
from charassets.domain.sources import RAW_SCHEMA, Chunk, SourceSpec
from charassets.runner import build_everything, run_partitions
from charassets_tests.conftest import shared_file

HAIR = {"red": (200, 35, 40), "blue": (40, 70, 190)}


def character(seed: int, hair: str) -> Image.Image:
    """A picture with a block of hair colour on top and random blobs below: each one distinct to a perceptual hash."""
    rng = np.random.default_rng(seed)
    blobs = Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)).resize((160, 120), Image.Resampling.BICUBIC)
    im = Image.new("RGB", (160, 200), HAIR[hair])
    im.paste(blobs, (0, 80))
    return im


def _bytes(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    folder = root / "kohya" / "10_characters"
    folder.mkdir(parents=True)
    for i in range(48):
        hair = "red" if i % 2 else "blue"
        character(i, hair).save(folder / f"c{i:03d}.png")
        if i < 40:  # the rest are image-only
            (folder / f"c{i:03d}.txt").write_text(f"1girl, solo, {hair} hair, smile")
    # a near duplicate: c000 smaller, recompressed and a little brighter
    dup = Image.open(folder / "c000.png").resize((120, 150)).point(lambda v: min(255, v + 6))
    (folder / "c000_copy.jpg").write_bytes(_bytes(dup, "JPEG", quality=80))
    (folder / "c000_copy.txt").write_text("1girl, solo, blue hair")
    # odd but valid files
    (folder / "cmyk.jpg").write_bytes(_bytes(character(90, "red").convert("CMYK"), "JPEG"))
    frames = [character(91, "blue"), character(92, "red")]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=100)
    character(93, "red").convert("P").save(folder / "palette.png")
    # bad files, each without tags: they can only be rejected
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.jpg").write_text("not a picture")
    (folder / "cut.webp").write_bytes(_bytes(character(94, "red"), "WEBP")[:200])
    (folder / "bad_sidecar.png").write_bytes(_bytes(character(95, "blue"), "PNG"))
    (folder / "bad_sidecar.txt").write_bytes(b"1girl, \xff\xfe blue hair")
    # two single-face pictures from the dev set, image-only
    for name in ("1cb2a05cbf82a7ad.webp", "237060063cc1c26b.webp"):
        src = shared_file(f"images_dev/{name}")
        shutil.copy(src, folder / name)

    table_dir = root / "table"
    table_dir.mkdir()
    (table_dir / "side.png").write_bytes(_bytes(character(96, "blue"), "PNG"))
    served = root / "served"
    served.mkdir()
    (served / "remote.png").write_bytes(_bytes(character(98, "red"), "PNG"))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    pl.DataFrame(
        {
            "id": ["p1", "p2", "p3", "p4", "p5", "p6"],
            "tags": ["1girl, red hair", "1girl, blue hair", "1girl, red hair", "1girl", "1girl", "1girl"],
            "image": [
                {"bytes": _bytes(character(97, "red"), "PNG"), "path": None},
                {"bytes": None, "path": "side.png"},
                {"bytes": b"\x89PNG broken", "path": None},
                {"bytes": None, "path": "../kohya/10_characters/c001.png"},
                {"bytes": None, "path": f"{url}/remote.png"},  # a URL, fetched over HTTP
                {"bytes": None, "path": f"{url}/missing.png"},
            ],
        }
    ).write_parquet(table_dir / "rows.parquet")
    sources = root / "sources.yaml"
    sources.write_text(
        f"sources:\n- name: folder\n  uri: {root / 'kohya'}\n  format: images\n  rows_per_partition: 30\n"
        f"- name: table\n  uri: {table_dir / 'rows.parquet'}\n  images: true\n  remote_images: true\n"
    )
    env = {"CHARASSETS_SOURCES": str(sources), "CHARASSETS_LAKE": str(root / "lake"), "CHARASSETS_HOME": str(root)}
    from charassets.domain.images import fetch as image_fetch

    image_fetch.ALLOW_PRIVATE_HOSTS.add("127.0.0.1")  # the test's own HTTP server, on loopback
    defs = build_definitions(env)
    instance = dg.DagsterInstance.ephemeral()
    report = build_everything(defs, instance, log_level="WARNING")
    yield defs, instance, defs.resources["lake"].lake(), report, root
    image_fetch.ALLOW_PRIVATE_HOSTS.discard("127.0.0.1")
    httpd.shutdown()


def test_every_image_is_decoded_or_quarantined_with_a_reason(built):
    _, _, lake, report, _ = built
    records = lake.read("raw", "records")
    images, rejects = lake.read("raw", "images"), lake.read("raw", "image_rejects")
    referenced = records.filter(pl.col("image_ref").is_not_null()).height
    assert referenced == images.height + rejects.height
    reasons = dict(rejects.select("image_ref", "reason").iter_rows())
    assert reasons["10_characters/empty.png"] == "empty file"
    assert reasons["10_characters/notes.jpg"].startswith("not an image")
    assert reasons["10_characters/cut.webp"].startswith("corrupt or truncated")
    assert "escapes the source root" in reasons["../kohya/10_characters/c001.png"]
    missing = next(r for ref, r in reasons.items() if ref.endswith("/missing.png"))
    assert missing.startswith("cannot read http://") and "FileNotFoundError" in missing
    assert reasons["embedded"].startswith("not an image") or reasons["embedded"].startswith("corrupt")
    # a sidecar that is not UTF-8 quarantines its record at the raw stage, with the reason
    raw_rejects = lake.read("raw", "rejects")
    assert raw_rejects.filter(pl.col("source_id") == "10_characters/bad_sidecar.png").get_column("reason").to_list() == [
        "sidecar bad_sidecar.txt is not valid UTF-8"
    ]
    facts = {r["image_ref"]: r for r in images.iter_rows(named=True)}
    assert facts["10_characters/cmyk.jpg"]["mode"] == "CMYK"
    assert facts["10_characters/animated.gif"]["frames"] == 2
    assert facts["10_characters/palette.png"]["mode"] == "P"
    assert {facts["side.png"]["width"], facts["embedded"]["height"]} == {160, 200}
    remote = next(f for ref, f in facts.items() if ref.endswith("/remote.png"))
    assert remote["sha256"] == hashlib.sha256(_bytes(character(98, "red"), "PNG")).hexdigest()
    assert all(Image.open(io.BytesIO(t)).size[1] <= 256 for t in images.get_column("thumbnail").to_list())
    # the unknown-rate check is a warning meant for real data sizes; the accounting checks must pass
    assert [c for c in report.failed_checks if "unknown_rates" not in c] == []


def test_final_table_accounts_for_every_row_and_reconciles_images_with_tags(built):
    defs, _, lake, _, _ = built
    registry_rows = lake.read("raw", "source_partitions").get_column("row_count").sum()
    mart = lake.read("marts", "character_attributes")
    assert mart.height == registry_rows  # rows in = rows out (quarantined rows included, with their reason)
    by_id = {r["source_id"]: r for r in mart.iter_rows(named=True)}
    assert by_id["10_characters/empty.png"]["status"] == "rejected"
    assert by_id["10_characters/empty.png"]["reason"] == "image: empty file"
    assert by_id["10_characters/bad_sidecar.png"]["status"] == "rejected"
    tagged = by_id["10_characters/c001.png"]
    assert tagged["status"] == "ok" and tagged["hair_color"]["value"] == "red" and tagged["hair_color"]["source"] == "tags"
    facts = lake.read("raw", "images").filter(pl.col("image_ref") == "10_characters/c001.png").row(0, named=True)
    assert tagged["image"] == {
        "ref": "10_characters/c001.png",
        "sha256": facts["sha256"],
        "phash": facts["phash"],
        "width": 160,
        "height": 200,
        "format": "PNG",
        "mode": "RGB",
        "frames": 1,
        "backend": "animeface",
        "faces": 0,
        "face_boxes": [],
    }  # the final table links each record to its picture
    assert by_id["10_characters/empty.png"]["image"]["ref"] == "10_characters/empty.png"
    dev = by_id["10_characters/1cb2a05cbf82a7ad.webp"]["image"]
    assert dev["faces"] == 1 and len(dev["face_boxes"][0]) == 4
    # image-only pictures: the image decides; synthetic ones show no face, the dev pictures one face each
    assert by_id["10_characters/c045.png"]["status"] == "ambiguous"
    assert "no_face_detected" in by_id["10_characters/c045.png"]["flags"]
    for name in ("1cb2a05cbf82a7ad.webp", "237060063cc1c26b.webp"):
        row = by_id[f"10_characters/{name}"]
        assert row["status"] == "ok" and "image_only" in row["flags"] and row["subject_count"] == 1
    assert by_id["10_characters/237060063cc1c26b.webp"]["hair_color"]["source"] in ("image", "image_head")
    model = record_model(defs.resources["catalog"].ontology())
    from charassets.domain.schema import to_json_frame

    for row in to_json_frame(mart, defs.resources["catalog"].ontology()).iter_rows(named=True):
        model.model_validate(row)  # every row, image-decided ones included, fits the published schema


def test_image_heads_learn_from_tag_labels_and_are_versioned(built):
    defs, _, lake, _, _ = built
    store = defs.resources["mlflow_store"]
    registry.configure(store.tracking_uri)
    champ = registry.champion("image_hair_color")
    assert champ is not None
    assert registry.model_name("image_hair_color") == "charassets-head-image-hair-color"
    versions = [v for v in registry.versions("image_hair_color") if v["model"] == "charassets-head-image-hair-color"]
    m = versions[0]["metrics"]
    assert m["macro_f1"] > m["baseline_majority_macro_f1"]  # red vs blue from the colour layout, learnt from tags alone
    assert versions[0]["tags"]["inputs"] == "image embeddings"
    preds = lake.read("models", "image_head_predictions")
    assert preds.height == lake.read("features", "image_embeddings").height == lake.read("raw", "images").height
    hair = preds.join(lake.read("raw", "records").select("record_id", "source_id"), on="record_id")
    image_only_red = hair.filter(pl.col("source_id") == "10_characters/c041.png").get_column("hair_color").struct.field("value")
    assert image_only_red.to_list() == ["red"]  # an image without tags, classified by a head trained on other images' tags


def test_near_duplicates_share_a_cluster_and_the_view_keeps_one(built):
    _, _, lake, _, _ = built
    clusters = lake.read("features", "image_clusters").join(lake.read("raw", "records").select("record_id", "source_id"), on="record_id")
    ids = dict(clusters.select("source_id", "cluster_id").iter_rows())
    assert ids["10_characters/c000.png"] == ids["10_characters/c000_copy.jpg"]
    multi = clusters.filter(pl.col("cluster_size") > 1)
    assert multi.get_column("cluster_id").n_unique() == 1 and multi.height == 2
    view = lake.read("marts", "character_attributes_deduplicated")
    assert view.height == lake.read("marts", "character_attributes").height - 1
    kept = view.filter(pl.col("cluster_size") == 2).get_column("source_id").to_list()
    assert kept == ["10_characters/c000.png"]  # the larger of the two


def test_rerunning_replaces_image_partitions_exactly(built):
    defs, instance, lake, _, _ = built
    tables = [("raw", "images"), ("raw", "image_rejects"), ("features", "image_signals"), ("features", "image_embeddings")]
    before = {t: lake.partition_counts(*t) for t in tables}
    signals = lake.read("features", "image_signals").sort("record_id")
    run_partitions(defs, instance, log_level="WARNING")
    assert {t: lake.partition_counts(*t) for t in tables} == before
    assert lake.read("features", "image_signals").sort("record_id").equals(signals)  # deterministic, replaced not appended


def test_image_resolution_rules(ontology, embedded_vocabulary):
    spec = SourceSpec(name="s", uri="-", layout="ordered")
    tags = {"t": "1girl, solo, red hair", "o": "", "r": "", "h": "1girl, solo"}
    raw = pl.DataFrame(
        [
            {"record_id": f"s:{k}", "source_id": k, "source": "s", "partition": "p", "file": "-", "row_index": i, "tags_raw": v}
            for i, (k, v) in enumerate(tags.items())
        ],
        schema=RAW_SCHEMA,
    ).with_columns(pl.col("source_id").alias("record_id"))
    clean, _ = clean_stage(raw, spec, embedded_vocabulary)
    labels = label_stage(clean, ontology)
    blue = {"hair_color": {"value": "blue", "confidence": 0.9, "evidence": ["animeface:hair=#2846be"], "source": "image"}}
    signals = pl.DataFrame(
        [
            {"record_id": k, "backend": "animeface", "status": "ok", "faces": 1, "flags": [], "attributes": json_attrs}
            for k, json_attrs in (("t", blue), ("o", blue), ("h", blue))
        ]
    ).with_columns(pl.col("attributes").map_elements(lambda a: __import__("json").dumps(a), return_dtype=pl.String))
    tagless = pl.DataFrame({"record_id": ["o", "r"]})
    rejects = pl.DataFrame({"record_id": ["r"], "image_ref": ["r.png"], "reason": ["empty file"]})
    images = {"tagless": tagless, "signals": signals, "image_rejects": rejects}
    decided = decide(labels, ontology, images=images).join(image_facts(None, signals, rejects), on="record_id", how="left")
    out = {r["record_id"]: r for r in decided.iter_rows(named=True)}
    assert out["t"]["hair_color"]["value"] == "red" and "image_disagrees:hair_color=blue" in out["t"]["flags"]  # tags win
    assert out["o"]["status"] == "ok" and out["o"]["hair_color"]["value"] == "blue" and "image_only" in out["o"]["flags"]
    assert out["r"]["status"] == "rejected" and out["r"]["reason"] == "image: empty file"
    assert out["r"]["image"]["ref"] == "r.png" and out["r"]["image"]["sha256"] is None
    assert out["h"]["hair_color"]["value"] == "blue" and out["h"]["hair_color"]["source"] == "image"  # fills what tags leave open


def test_near_duplicates_share_a_side_of_the_validation_split():
    from charassets.domain.models.heads import stable_split
    from charassets.domain.models.training import split_keys

    ids = [f"r{i}" for i in range(400)]
    cand = pl.DataFrame({"record_id": ids, "label": ["a", "b"] * 200, "group": [f"g{i // 4}" for i in range(400)]})
    val = stable_split(split_keys(cand), cand.get_column("label").to_list())
    by_group = pl.DataFrame({"group": cand.get_column("group"), "val": val}).group_by("group").agg(pl.col("val").n_unique())
    assert by_group.get_column("val").max() == 1  # every group of four near duplicates on one side
    assert 0.1 < val.mean() < 0.35
    assert split_keys(cand.drop("group")) == ids  # without groups, each record decides alone


def test_embedded_image_bytes_are_read_in_one_pass_across_row_groups(tmp_path):
    """A chunk starting inside a row group, spanning several: each record gets its own row's bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from charassets.domain.images.stage import image_payloads
    from charassets.domain.sources import read_chunk, register

    blobs = [_bytes(character(200 + i, "red"), "PNG") for i in range(10)]
    images = pa.array([{"bytes": b, "path": None} for b in blobs], type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    pq.write_table(
        pa.table({"id": [f"i{i}" for i in range(10)], "tags": ["1girl"] * 10, "image": images}), tmp_path / "t.parquet", row_group_size=3
    )
    spec = SourceSpec(
        name="t", uri=str(tmp_path / "t.parquet"), columns={"id": "id", "tags": "tags", "image": "image"}, images=True, rows_per_partition=4
    )
    for row in register(spec).iter_rows(named=True):  # chunks 0-3, 4-7, 8-9 over row groups 0-2, 3-5, 6-8, 9
        chunk = Chunk.from_row(row)
        records, _ = read_chunk(chunk, spec)
        got = {r["row_index"]: data for r, data in image_payloads(records, chunk, spec)}
        assert got == {i: blobs[i] for i in range(chunk.row_start, chunk.row_start + chunk.row_count)}


def test_every_asset_reads_exactly_the_tables_it_declares(built):
    """The lineage the UI draws is what the code does: each asset read every lake table it declares, and (by the guard) no other."""
    from charassets.domain.tables import SEEN_READS, TABLES

    defs = built[0]
    checked: set[str] = set()
    for assets_def in set(defs.resolve_asset_graph().assets_defs):
        owned = [TABLES["/".join(k.path)] for k in assets_def.keys]
        if not owned:  # an asset-check-only definition
            continue
        owner = ",".join(sorted(t.path for t in owned))
        declared = {r for t in owned for r in t.reads} - {t.path for t in owned}
        lake_reads = {r for r in declared if TABLES[r].storage == "delta"}  # models are read from MLflow, not the lake
        assert SEEN_READS.get(owner, set()) == lake_reads, owner
        checked |= {t.path for t in owned}
    assert checked == set(TABLES)
