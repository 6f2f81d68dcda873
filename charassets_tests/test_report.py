"""The dataset report, built on a small demo lake with pictures and opened in headless Chromium."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from PIL import Image

from charassets.definitions import build_definitions
from charassets.domain.demo import generate
from charassets.runner import build_everything

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SECTIONS = ["overview", "distributions", "long-tail", "label-noise", "examples"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    demo = generate(root / "demo", n=3000, rows_per_partition=1500)
    folder = root / "pictures" / "set"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(10):
        colours = rng.integers(0, 255, (5, 5, 3), dtype=np.uint8)
        Image.fromarray(colours).resize((120, 160), Image.Resampling.BICUBIC).save(folder / f"p{i}.png")
        if i < 6:  # the rest are image-only records
            (folder / f"p{i}.txt").write_text("1girl, solo, blue hair, smile")
    (folder / "broken.png").write_bytes(b"not a picture")
    sources = root / "sources.yaml"
    demo_sources = (
        demo.read_text().replace("uri: ordered", f"uri: {demo.parent}/ordered").replace("uri: danbooru", f"uri: {demo.parent}/danbooru")
    )
    sources.write_text(demo_sources + f"- name: pictures\n  uri: {root / 'pictures'}\n  format: images\n")
    env = {"CHARASSETS_SOURCES": str(sources), "CHARASSETS_HOME": str(root), "CHARASSETS_EMBEDDER": "hashing:64"}
    defs = build_definitions(env)
    with dg.DagsterInstance.ephemeral() as instance:
        report = build_everything(defs, instance, log_level="WARNING")
        mats = instance.fetch_materializations(dg.AssetKey(["reports", "dataset_report"]), limit=1).records
    lake = defs.resources["lake"].lake()
    return root, lake, report, mats[0].asset_materialization.metadata


def _at(figures: dict, path: str):
    node = figures
    for part in path.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def test_the_full_build_writes_the_report_and_its_metadata(built):
    root, lake, report, metadata = built
    assert "report_s" in report.seconds
    html, js = Path(lake.root) / "reports" / "dataset_report.html", Path(lake.root) / "reports" / "dataset_report.json"
    assert html.is_file() and js.is_file()
    assert (
        metadata["html"].value == str(html)
        and "records" in metadata["summary"].value
        and "data:image/png;base64," in metadata["summary"].value
    )


def test_json_counts_equal_direct_counts_on_the_tables(built):
    _, lake, _, _ = built
    figures = json.loads((Path(lake.root) / "reports" / "dataset_report.json").read_text())
    final = lake.read("marts", "character_attributes")
    assert figures["overview"]["records"] == final.height == int(lake.read("raw", "source_partitions")["row_count"].sum())
    assert figures["overview"]["by_status"] == dict(final.group_by("status").len().iter_rows())
    assert figures["overview"]["partitions"] == final.get_column("partition").n_unique()
    ok = final.filter(pl.col("status") == "ok")
    hair = figures["fields"]["Hair Color"]
    assert hair["unknown"] == ok.filter(pl.col("hair_color").struct.field("value") == "unknown").height
    counts = ok.group_by(pl.col("hair_color").struct.field("value")).len().filter(pl.col("value") != "unknown").sort("len", descending=True)
    assert hair["values"][0] == {"value": counts["value"][0], "n": counts["len"][0], "share": round(counts["len"][0] / ok.height, 4)}
    styles = ok.select(pl.col("hair_style").struct.field("value")).explode("value").drop_nulls()
    assert sum(v["n"] for v in figures["fields"]["Hair Style"]["values"]) <= styles.height
    single = ok.filter(pl.col("characters").list.len() == 1).select(pl.col("characters").list.first()).to_series().value_counts()
    chars = figures["long_tail"]["characters"]
    assert chars["distinct"] == single.height and chars["single_character_records"] == int(single["count"].sum())
    assert chars["under_5_records"] == single.filter(pl.col("count") < 5).height
    assert figures["overview"]["duplicates"]["images"] == lake.read("raw", "images").height
    contradictions = ok.select(
        pl.col("flags").list.eval(pl.element().str.starts_with("contradicts_profile:hair_color")).list.any().sum()
    ).item()
    assert figures["label_noise"]["contradictions_by_field"].get("Hair Color", 0) == contradictions
    ontology = build_definitions().resources["catalog"].ontology()
    names = {f.key: f.name for f in ontology.fields}
    in_post = (
        ok.select(pl.col("flags").explode())
        .filter(pl.col("flags").str.contains(r"^(conflict|several|conflict_resolved):"))
        .select(pl.col("flags").str.extract(r":([a-z_]+)$", 1).alias("key"), pl.col("flags").str.extract(r"^([a-z_]+):", 1).alias("kind"))
        .group_by("key", "kind")
        .len()
    )
    noise = figures["label_noise"]
    assert {(c["field"], c["kind"]): c["n"] for c in noise["in_post_conflicts"]} == {
        (names.get(k, k), kind): n for k, kind, n in in_post.iter_rows()
    }
    kinds = {e["kind"] for e in figures["examples"]}
    assert len(figures["examples"]) == 24 and {"image only", "ambiguous", "ok"} <= kinds
    assert any(e["thumbnail"] for e in figures["examples"] if e["kind"] == "image only")
    assert set(figures["long_tail"]["heads"]) >= {"Hair Color", "Gender"}  # per-class recall of the champions, from MLflow


def test_figures_made_in_lent_workers_equal_the_figures_made_here(built, monkeypatch):
    """With workers lent, every section and every batch of the per-field figures is a task of theirs (a thread pool
    stands in), and the figures are the ones computed here, batches summed across tasks alike."""
    from concurrent.futures import ThreadPoolExecutor

    from charassets.domain import lake as lake_module
    from charassets.domain.lending import lending
    from charassets.domain.report import figures as report_figures

    _, lake, _, _ = built
    ontology = build_definitions().resources["catalog"].ontology()
    heads = {"Hair Color": [{"class": "blue", "recall": 0.5, "support": 2}]}
    # several batches of partitions, summed
    monkeypatch.setattr(report_figures, "partition_batches", lambda keys, rows: lake_module.partition_batches(keys, rows, max_rows=1000))
    assert len(report_figures._field_batches(lake)) > 1

    class Recording(ThreadPoolExecutor):
        def __init__(self, workers: int):
            super().__init__(workers)
            self.tasks: list[str] = []
            self.futures: list = []

        def submit(self, fn, *args, **kwargs):
            self.tasks.append(getattr(fn, "func", fn).__name__)
            self.futures.append(super().submit(fn, *args, **kwargs))
            return self.futures[-1]

    alone = report_figures.dataset_figures(lake, ontology, heads)
    with Recording(2) as pool, lending(pool, 2):
        lent = report_figures.dataset_figures(lake, ontology, heads)
    assert sorted(pool.tasks) == sorted(
        ["_long_tail", "_examples", "_label_noise", "_overview"] + ["_field_batch_figures"] * len(report_figures._field_batches(lake))
    )
    drop = lambda f: {k: v for k, v in f.items() if k != "generated_at"}  # noqa: E731
    assert drop(lent) == drop(alone) and lent["long_tail"]["heads"] == heads

    def broken(*args):
        raise ValueError("no long tail")

    monkeypatch.setattr(report_figures, "_long_tail", broken)
    with Recording(1) as pool, lending(pool, 1):
        with pytest.raises(ValueError, match="no long tail"):
            report_figures.dataset_figures(lake, ontology, heads)
        assert all(f.done() for f in pool.futures)  # a failed section leaves no scan queued or running


def test_charts_drawn_in_lent_workers_are_the_charts_drawn_here(built, monkeypatch):
    """With workers lent, each chart is a task of theirs, and the PNGs are byte for byte the ones drawn here; a chart
    that fails leaves none queued or running. A one-thread pool stands in (pyplot's state is one per process)."""
    from concurrent.futures import ThreadPoolExecutor

    from charassets.domain.lending import lending
    from charassets.domain.report import render
    from charassets.domain.report.figures import dataset_figures

    _, lake, _, _ = built
    figures = dataset_figures(
        lake, build_definitions().resources["catalog"].ontology(), {"Hair Color": [{"class": "blue", "recall": 0.5, "support": 2}]}
    )
    submitted: list[str] = []
    futures: list = []

    class Recording(ThreadPoolExecutor):
        def submit(self, fn, *args, **kwargs):
            submitted.append(fn.__name__)
            futures.append(super().submit(fn, *args, **kwargs))
            return futures[-1]

    alone = render.report_plots(figures)
    with Recording(1) as pool, lending(pool, 2):
        lent = render.report_plots(figures)
    assert list(lent) == list(alone) and lent == alone and "head:Hair Color" in lent
    assert sorted(submitted) == sorted(
        ["_status_chart", "_rank_frequency_chart", "_head_chart"] + ["_field_chart"] * len(figures["fields"])
    )

    def broken(*args):
        raise ValueError("no chart")

    monkeypatch.setattr(render, "_rank_frequency_chart", broken)
    futures.clear()
    with Recording(1) as pool, lending(pool, 1):
        with pytest.raises(ValueError, match="no chart"):
            render.report_plots(figures)
        assert futures and all(f.done() for f in futures)  # a failed chart leaves none queued or running


def test_label_noise_examples_are_their_records_own_tags_values_and_flags(built, tmp_path):
    """Records flagged as contradicting their character's profile (added to a copy of the lake: the first ok record of
    two partitions, and ok records whose id a rejected row of their partition repeats) are counted, and each is one
    example, with its own record's tags, value and the profile's value."""
    from charassets.domain.lake import Lake
    from charassets.domain.report.figures import FINAL, _label_noise

    _, lake, _, _ = built
    shutil.copytree(lake.root, tmp_path / "lake")
    copy = Lake(str(tmp_path / "lake"))
    final = copy.read(*FINAL)
    ok_rows = final.filter(pl.col("status") == "ok")
    first = ok_rows.group_by("partition").agg(pl.col("record_id").sort().first()).sort("partition").head(2)
    repeated = ok_rows.join(final.filter(pl.col("status") != "ok"), on=["record_id", "partition"], how="semi").head(2)
    assert first.height == 2 and repeated.height >= 1  # the demo repeats some ids: the repeat is rejected
    flagged = dict(pl.concat([first, repeated.select(first.columns)]).select("record_id", "partition").iter_rows())
    for partition in set(flagged.values()):
        rows = copy.read(*FINAL, [partition]).with_columns(
            pl.when(pl.col("record_id").is_in(list(flagged)) & (pl.col("status") == "ok"))
            .then(pl.col("flags").list.concat(pl.lit(["contradicts_profile:hair_color=silver"])))
            .otherwise(pl.col("flags"))
            .alias("flags")
        )
        copy.write_partitions(*FINAL, rows, [partition])
    ok = copy.read(*FINAL).filter(pl.col("status") == "ok")
    before = ok.select(pl.col("flags").list.eval(pl.element().str.starts_with("contradicts_profile:hair_color")).list.any().sum()).item()
    ontology = build_definitions().resources["catalog"].ontology()
    noise = _label_noise(copy, ontology)
    assert noise["contradictions_by_field"]["Hair Color"] == before >= len(flagged) >= 3
    tags = dict(copy.read("clean", "tags").select("record_id", "tags").iter_rows())
    by_id = {r["record_id"]: r for r in ok.iter_rows(named=True)}
    shown = [e["record_id"] for e in noise["examples"]]
    assert len(shown) == len(set(shown)) and set(flagged) <= set(shown)  # one example per record
    key_of = {f.name: f.key for f in ontology.fields}
    for e in noise["examples"]:
        rid, key = e["record_id"], key_of[e["field"]]
        assert e["tags"] == ", ".join(tags[rid]) and e["record_value"] == by_id[rid][key]["value"] is not None
        assert f"contradicts_profile:{key}={e['profile_value']}" in by_id[rid]["flags"]
    assert {e["profile_value"] for e in noise["examples"] if e["record_id"] in flagged} == {"silver"}


def test_the_html_opens_offline_with_every_section_image_and_number(built):
    assert CHROMIUM, "Debian's chromium is needed for the browser tests (.ci/run installs it)"
    from playwright.sync_api import sync_playwright

    _, lake, _, _ = built
    html = Path(lake.root) / "reports" / "dataset_report.html"
    figures = json.loads(html.with_suffix(".json").read_text())
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-background-networking"], headless=True)
        page = browser.new_page()
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(html.as_uri())
        page.wait_for_load_state("load")
        for section in SECTIONS:
            assert page.locator(f"section#{section} h2").count() == 1, section
        widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.complete, i.naturalWidth])")
        assert len(widths) >= 15 and all(done and w > 0 for done, w in widths)
        figures_in_page = page.eval_on_selector_all("[data-figure]", "els => els.map(e => [e.dataset.figure, e.textContent.trim()])")
        assert len(figures_in_page) >= 60
        for path, text in figures_in_page:
            assert text == str(_at(figures, path)), path
        assert page.locator("#examples .example img").count() >= 5  # thumbnails beside the records
        before = page.locator("#noise-examples tbody tr td:first-child").all_text_contents()
        page.locator("#noise-examples th").nth(1).click()  # sortable by a column
        after = page.locator("#noise-examples tbody tr td:nth-child(2)").all_text_contents()
        assert after == sorted(after) and sorted(before) == sorted(
            page.locator("#noise-examples tbody tr td:first-child").all_text_contents()
        )
        browser.close()
    assert all(u.startswith(("file:", "data:")) for u in requests)  # self-contained: nothing fetched from anywhere


def test_report_command_prints_the_path(built, monkeypatch):
    from charassets.cli import main

    root, lake, _, _ = built
    monkeypatch.setenv("CHARASSETS_HOME", str(root))
    monkeypatch.setenv("CHARASSETS_EMBEDDER", "hashing:64")
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("CHARASSETS_SOURCES", str(root / "sources.yaml"))
    result = CliRunner().invoke(main, ["report"])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == str(Path(lake.root) / "reports" / "dataset_report.html")
