"""Command line: ``charassets demo | run | extract | generate``."""

from __future__ import annotations

import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import click

# a full build made in this process (the demo) lends this many helper processes at most the heads' fits and the report's
# scans and charts: one per core, no more than the demo's heads (each costs ~3 CPU-s to start)
HELPERS = 4


def _is_project_root(path: Path) -> bool:
    """This project's root (its own dagster.yaml beside its pyproject), not any folder that has a dagster.yaml."""
    try:
        return (path / "dagster.yaml").is_file() and 'name = "charassets"' in (path / "pyproject.toml").read_text()
    except OSError:
        return False


def _dagster_home() -> None:
    """The Dagster instance to use: ``DAGSTER_HOME`` when set; the project root's when run there with the
    default home (so CLI runs show in `make dev`); otherwise a private one under ``CHARASSETS_HOME``, so a
    different lake never shares an event log with another."""
    if "DAGSTER_HOME" not in os.environ:
        if _is_project_root(Path.cwd()) and "CHARASSETS_HOME" not in os.environ:
            home = Path.cwd()
        else:
            home = Path(os.environ.get("CHARASSETS_HOME", ".charassets")).resolve() / "dagster_home"
        home.mkdir(parents=True, exist_ok=True)
        os.environ["DAGSTER_HOME"] = str(home)


@click.group()
def main() -> None:
    """charassets: character tag records in, validated per-character attribute tables out."""


@main.command()
@click.option("--records", type=int, default=None, help="demo records to generate (default 24000)")
def demo(records: int | None) -> None:
    """Generate the demo dataset (once), materialize every asset over all its partitions, train the heads."""
    if records:
        os.environ["CHARASSETS_DEMO_RECORDS"] = str(records)
    _run(None, train_heads=True)


@main.command()
@click.option("--partition", "partitions", multiple=True, help="partition key (repeatable); default: all registered")
@click.option("--per-run", type=int, default=None, help="partitions per Dagster run")
@click.option("--missing", is_flag=True, help="only partitions not materialized yet (e.g. new files)")
@click.option("--workers", type=int, default=1, show_default=True, help="processes running partition runs concurrently")
def run(partitions: tuple[str, ...], per_run: int | None, missing: bool, workers: int) -> None:
    """Register the configured sources and materialize partitions (a backfill, no daemon needed)."""
    _run(list(partitions) or None, per_run, missing, workers=workers)


@main.command()
@click.option("--retention-hours", type=int, default=168, show_default=True, help="keep files any version this recent needs")
@click.option("--no-live-writers", is_flag=True, help="allow a retention under an hour: only when no run is writing to the lake")
def maintain(retention_hours: int, no_live_writers: bool) -> None:
    """Compact, checkpoint and vacuum every Delta table (what the nightly maintenance job does)."""
    from charassets.defs.maintenance import MIN_LIVE_RETENTION_HOURS

    if retention_hours < MIN_LIVE_RETENTION_HOURS and not no_live_writers:
        raise click.UsageError(
            f"--retention-hours {retention_hours} would vacuum files a running backfill has written but not yet committed; "
            f"use at least {MIN_LIVE_RETENTION_HOURS}, or add --no-live-writers when nothing is writing to the lake"
        )
    from charassets.definitions import build_definitions
    from charassets.defs.maintenance import maintain_lake

    lake = build_definitions().resources["lake"].lake()  # type: ignore[union-attr]
    report = maintain_lake(lake, retention_hours, 128 * 2**20)
    for name, r in report.items():
        click.echo(f"{name:<32} " + ", ".join(f"{k}={v}" for k, v in r.items()))
    if any("error" in r for r in report.values()):
        sys.exit(1)


def _run(
    partitions: list[str] | None, per_run: int | None = None, only_missing: bool = False, train_heads: bool = False, workers: int = 1
) -> None:
    _dagster_home()
    import dagster as dg
    import polars as pl

    from charassets.definitions import build_definitions
    from charassets.defs.partitions import PARTITIONS_PER_RUN
    from charassets.runner import build_everything, heads_metadata, run_partitions

    defs = build_definitions()
    t0 = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        if train_heads:
            build = build_everything(defs, instance, workers=workers, helpers=min(os.cpu_count() or 1, HELPERS))
            report, heads, failed = build.prepared, build.trained, build.failed_checks
        else:
            report = run_partitions(defs, instance, partitions, per_run or PARTITIONS_PER_RUN, only_missing=only_missing, workers=workers)
            heads, failed = None, report.failed_checks
    lake = defs.resources["lake"].lake()  # type: ignore[union-attr]
    status = lake.scan("marts", "character_attributes").group_by("status").len().sort("status").collect()
    runs = f"{len(report.runs)} partition run(s)" + (" to prepare, then training, publishing and the report" if train_heads else "")
    click.echo(f"\nMaterialized {len(report.partitions)} partitions ({runs}), {time.perf_counter() - t0:.1f}s")
    click.echo("Final table by status: " + ", ".join(f"{s}={n}" for s, n in status.iter_rows()))
    filled = (
        lake.scan("marts", "character_attributes")
        .select(pl.concat_list([pl.col(k).struct.field("source") for k in ("hair_color", "eye_color", "hair_length", "gender")]).alias("s"))
        .explode("s")
        .group_by("s")
        .len()
        .collect()
    )
    click.echo(
        "Hair/eye colour, length, gender decided by: "
        + ", ".join(f"{s or 'nothing (unknown, or not an ok record)'}={n}" for s, n in filled.sort("s", nulls_last=True).iter_rows())
    )
    if failed:
        click.echo(f"Checks that did not pass: {failed}", err=True)
    if heads is not None:
        md = heads_metadata(heads)
        if md["macro_f1"].value:
            click.echo(
                "Heads (held-out macro-F1, vs majority class): "
                + ", ".join(f"{f}={v:.3f} ({md['baselines'].value[f]['majority']:.3f})" for f, v in md["macro_f1"].value.items())
            )
        if md.get("unchanged") and md["unchanged"].value:
            click.echo(f"Heads unchanged (same data and config as their champions, no new version): {', '.join(md['unchanged'].value)}")
        if md.get("not_filling") and md["not_filling"].value:
            click.echo(
                f"Heads that do not fill (no class reaches 90% precision, or no better than a baseline): {', '.join(md['not_filling'].value)}"
            )
        click.echo(f"MLflow:               make mlflow  ->  http://127.0.0.1:5000  ({defs.resources['mlflow_store'].tracking_uri})")  # type: ignore[union-attr]
        click.echo("Compare head versions: charassets models compare [ATTRIBUTE]")
    click.echo(f"Lake (Delta tables):  {lake.root}/<stage>/<table>")
    click.echo(f"Exports (gzip JSONL/Parquet + schema.json): {lake.root}/exports/character_attributes")
    click.echo("Dagster UI:           make dev  ->  http://127.0.0.1:3000  (runs, partitions, checks, metadata)")
    if train_heads:
        click.echo(f"Dataset report:       {lake.root}/reports/dataset_report.html  (charassets report --open)")


@main.command()
@click.option("--open", "open_it", is_flag=True, help="open the report in the default browser")
def report(open_it: bool) -> None:
    """Build the dataset report from every partition of the lake and print its path."""
    _dagster_home()
    import dagster as dg

    from charassets.definitions import build_definitions
    from charassets.runner import build_report

    defs = build_definitions()
    lake = defs.resources["lake"].lake()  # type: ignore[union-attr]
    if not lake.exists("marts", "character_attributes"):
        raise click.ClickException("no final table yet: run `make demo` or `charassets run` first")
    with dg.DagsterInstance.get() as instance:
        path = build_report(defs, instance, log_level="WARNING")
    click.echo(path)
    if open_it:
        import webbrowser

        webbrowser.open(Path(path).resolve().as_uri() if "://" not in path else path)


@main.command()
@click.option("--tags", "tag_string", help="one record's tags, comma-separated")
@click.option(
    "--input",
    "input_path",
    type=click.Path(exists=True),
    help="Parquet, JSONL or CSV with `id` and `tags`; or a folder of images (sidecar .txt tags optional)",
)
@click.option(
    "--image",
    "image_paths",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="an image file (repeatable: one JSON line per image)",
)
@click.option(
    "--image-backend",
    default=lambda: os.environ.get("CHARASSETS_IMAGE_BACKEND", "animeface"),
    show_default="animeface",
    help="animeface (offline), wd:<folder or hub id> (a WD-style ONNX tagger) or clip:<hub id or path> (zero-shot prompts)",
)
@click.option("--output", "output_path", type=click.Path(dir_okay=False), help="where to write JSONL (default: stdout)")
def extract(
    tag_string: str | None, input_path: str | None, image_paths: tuple[str, ...], image_backend: str, output_path: str | None
) -> None:
    """Print the attribute JSON for one tag string, images, every row of a file, or every image of a folder."""
    if sum(x is not None for x in (tag_string, input_path, image_paths or None)) != 1:
        raise click.UsageError("give exactly one of --tags, --image or --input")
    if image_paths:
        _extract_images(image_paths, image_backend, output_path)
        return
    if tag_string is not None:
        # the same path as --input (one row through the graph, with the project's profiles and
        # champion heads), so a string gets the answer it would get inside a file
        with tempfile.TemporaryDirectory(prefix="charassets-tags-") as tmp:
            one = Path(tmp) / "tags.jsonl"
            one.write_text(json.dumps({"id": "1", "tags": tag_string}, ensure_ascii=False) + "\n", encoding="utf-8")
            click.echo(json.dumps(json.loads(extract_file(one)[0]), indent=2, ensure_ascii=False))
        return
    rows = extract_file(Path(input_path))  # type: ignore[arg-type]
    text = "".join(line + "\n" for line in rows)
    if output_path:
        Path(output_path).write_text(text, encoding="utf-8")
        click.echo(f"wrote {len(rows)} rows to {output_path}", err=True)
    else:
        sys.stdout.write(text)


def _extract_images(paths: tuple[str, ...], backend: str, output_path: str | None) -> None:
    """``extract --image``: each picture through ``image_record`` (the function the app and the graph's image stage run).

    One image to stdout: the record as indented JSON. Several, or ``--output``: one JSON line
    each. Exit status 1 when any image was rejected.
    """
    from charassets.domain.images.signals import image_record
    from charassets.domain.ontology import Ontology
    from charassets.domain.pipeline import extract_one

    ontology = Ontology.load()
    reader = lambda tags: extract_one(", ".join(tags), ontology)  # noqa: E731  (what a tag-reading backend is given)
    records = [image_record(Path(p).read_bytes(), Path(p).name, ontology, backend, reader) for p in paths]
    if len(records) == 1 and not output_path:
        click.echo(json.dumps(records[0], indent=2, ensure_ascii=False))
    else:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        if output_path:
            Path(output_path).write_text(text, encoding="utf-8")
            click.echo(f"wrote {len(records)} rows to {output_path}", err=True)
        else:
            sys.stdout.write(text)
    if any(r["status"] == "rejected" for r in records):
        sys.exit(1)


def extract_file(path: Path) -> list[str]:
    """Run the Dagster graph on one file (or image folder) in a temporary lake; one JSON line per input row, in input order."""
    import dagster as dg
    import yaml

    from charassets.definitions import build_definitions, resources_from_env
    from charassets.domain.schema import to_json_frame
    from charassets.runner import run_partitions

    main_store = resources_from_env()
    main_lake = main_store["lake"].lake()  # type: ignore[attr-defined]
    mlflow_uri = main_store["mlflow_store"].tracking_uri  # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory(prefix="charassets-extract-") as tmp:
        sources = Path(tmp) / "sources.yaml"
        sources.write_text(
            yaml.safe_dump(
                {
                    "sources": [
                        {"name": "input", "uri": str(path.resolve()), "format": "images"}
                        if path.is_dir()
                        else {"name": "input", "uri": str(path.resolve()), "layout": "ordered", "columns": {"id": "id", "tags": "tags"}}
                    ]
                }
            )
        )
        env = {**os.environ, "CHARASSETS_SOURCES": str(sources), "CHARASSETS_LAKE": str(Path(tmp) / "lake"), "CHARASSETS_HOME": tmp}
        # the project's own profiles and champion heads, where they exist, help the file's records
        if main_lake.exists("marts", "character_profiles"):
            env["CHARASSETS_PRIOR_PROFILES"] = main_lake.uri("marts", "character_profiles")
        if not mlflow_uri.startswith("sqlite:///") or Path(mlflow_uri.removeprefix("sqlite:///")).exists():
            env["MLFLOW_TRACKING_URI"] = mlflow_uri
        defs = build_definitions(env)
        quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
        with dg.DagsterInstance.ephemeral() as instance:
            run_partitions(defs, instance, log_level="WARNING")
            if not defs.resolve_job_def("build_profiles").execute_in_process(instance=instance, run_config=quiet).success:
                raise click.ClickException("building profiles failed")
            run_partitions(defs, instance, log_level="WARNING", job_name="publish", register_first=False)
        lake = defs.resources["lake"].lake()  # type: ignore[union-attr]
        ontology = defs.resources["catalog"].ontology()  # type: ignore[union-attr]
        mart = lake.read("marts", "character_attributes").sort("partition", "row_index")
        return to_json_frame(mart, ontology).drop("partition").write_ndjson().splitlines()


@main.group()
def models() -> None:
    """Attribute heads in MLflow."""


COMPARE_COLUMNS = """columns:
  macro-F1   the head on its held-out validation records (rule labels, the head's own evidence tags masked)
  majority   baseline: always the most frequent class, on the same records
  char-rule  baseline: the named character's majority value in training, on the same records
  fills      yes: the head beats both baselines and at least one class reaches 90% precision; no: never fills;
             policy: the field's fill policy gives heads no say (attributes.yaml), whatever the head scores
  firing     classes that may fill (each above its own threshold, at >= 90% validation precision)
  cover      share of validation records on which it would fill
  decision   the champion gate's verdict for this version"""


@models.command("compare")
@click.argument("attribute", required=False)
def compare(attribute: str | None) -> None:
    """Versions of each head side by side: metrics, baselines, whether it fills, which is champion."""
    from charassets.definitions import resources_from_env
    from charassets.domain.models import registry as registry
    from charassets.domain.ontology import Ontology

    ontology = Ontology.load()
    try:
        key = ontology.field(attribute).key if attribute else None
    except KeyError as e:
        raise click.ClickException(str(e.args[0])) from None
    store = resources_from_env()["mlflow_store"]
    try:
        rows = store.store().versions(key)  # type: ignore[attr-defined]
    except Exception as e:  # a store that cannot be reached or read: say so, without a traceback
        raise click.ClickException(f"could not read the model registry at {store.tracking_uri}: {e}") from None  # type: ignore[attr-defined]
    if not rows:
        raise click.ClickException("no head versions yet: run `make demo` or materialize models/attribute_heads")
    header = f"{'model':<32}{'ver':>4} {'champ':<6}{'macro-F1':>9}{'majority':>9}{'char-rule':>10}{'fills':>7}{'firing':>7}{'cover':>7}  {'embedder':<18}{'parts':>6}  decision"
    click.echo(header)
    barred = {registry.model_name(f.key) for f in ontology.fields if "head" not in f.fill}
    barred |= {registry.model_name("image_" + f.key) for f in ontology.fields if "image_head" not in f.fill}
    for r in rows:
        m, t = r["metrics"], r["tags"]
        fills = "policy" if r["model"] in barred else {"true": "yes", "false": "no"}.get(t.get("fills", ""), "-")
        firing = f"{int(m['classes_firing'])}" if "classes_firing" in m else "-"
        click.echo(
            f"{r['model']:<32}{r['version']:>4} {'*' if r['champion'] else '':<6}{m.get('macro_f1', float('nan')):>9.4f}"
            f"{m.get('baseline_majority_macro_f1', float('nan')):>9.4f}{m.get('baseline_character_rule_macro_f1', float('nan')):>10.4f}"
            f"{fills:>7}{firing:>7}{m.get('coverage_at_threshold', float('nan')):>7.3f}  {t.get('embedder', ''):<18}"
            f"{t.get('partitions', ''):>6}  {t.get('gate_decision', '')}"
        )
    click.echo("\n" + COMPARE_COLUMNS)


@main.command()
@click.argument("gold", type=click.Path(exists=True, dir_okay=False))
@click.argument("output", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="report as JSON (default: OUTPUT.eval.json)")
@click.option(
    "--plot", "plot_path", type=click.Path(dir_okay=False), default=None, help="reliability plot PNG (default: OUTPUT.reliability.png)"
)
@click.option(
    "--images",
    "image_labels",
    is_flag=True,
    help="GOLD is a picture label file (file, hair_color, eye_color, characters...): print the image figures",
)
def evaluate(gold: str, output: str, json_path: str | None, plot_path: str | None, image_labels: bool) -> None:
    """Score an extraction output (JSONL from `extract`) against a GOLD file; see the README for the gold format."""
    from charassets.domain import evaluation
    from charassets.domain.ontology import Ontology

    if image_labels:
        from charassets.domain.images import labels

        figures = labels.score(evaluation.read_rows(output), labels.read_labels(gold))
        click.echo(labels.format_score(figures))
        Path(json_path or str(Path(output).with_suffix(".eval.json"))).write_text(json.dumps(figures, indent=2))
        return

    try:
        report = evaluation.evaluate(evaluation.read_rows(gold), evaluation.read_rows(output), Ontology.load())
    except (ValueError, KeyError) as e:
        raise click.ClickException(f"could not read the files: {e}") from e
    click.echo(evaluation.format_report(report))
    json_path = json_path or str(Path(output).with_suffix(".eval.json"))
    plot_path = plot_path or str(Path(output).with_suffix(".reliability.png"))
    Path(json_path).write_text(json.dumps(report, indent=2))
    evaluation.reliability_plot(report, plot_path)
    click.echo(f"\nwrote {json_path} and {plot_path}", err=True)


@main.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True)
@click.option(
    "--characters",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="character_tag,core_tags CSV (default: $CHARASSETS_SHARED_DATA/characters/character_core_tags.csv)",
)
@click.option("--n-characters", type=int, default=300, show_default=True)
@click.option("--posts", type=int, default=5, show_default=True, help="posts per character")
@click.option("--seed", type=int, default=0)
def devset(out_dir: str, characters: str | None, n_characters: int, posts: int, seed: int) -> None:
    """Write a development set of real-style posts (posts.jsonl) and its gold (gold.jsonl)."""
    from charassets.domain.devset import DevsetConfig, generate_devset
    from charassets.domain.tags.vocabulary import shared_data_dir

    path = characters or shared_data_dir() / "characters" / "character_core_tags.csv"
    if not Path(path).exists():
        raise click.ClickException(f"no characters file at {path}: pass --characters or set CHARASSETS_SHARED_DATA")
    posts_path, gold_path = generate_devset(out_dir, path, seed, DevsetConfig(characters=n_characters, posts_per_character=posts))
    click.echo(f"{posts_path}\n{gold_path}")


@main.command()
@click.option("--records", type=int, required=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True)
@click.option("--seed", type=int, default=0)
@click.option("--characters", type=click.Path(exists=True, dir_okay=False), default=None, help="character_tag,core_tags CSV")
@click.option("--rows-per-partition", type=int, default=5_000)
@click.option("--malformed-rate", type=float, default=0.005, help="share of malformed rows, of every kind")
@click.option("--workers", type=int, default=os.cpu_count() or 1, show_default=True, help="processes writing files")
def generate(
    records: int, out_dir: str, seed: int, characters: str | None, rows_per_partition: int, malformed_rate: float, workers: int
) -> None:
    """Write N deterministic demo records and their sources.yaml (the same files whatever --workers)."""
    from charassets.domain.demo import generate as gen

    click.echo(
        gen(
            out_dir,
            n=records,
            seed=seed,
            characters=characters,
            rows_per_partition=rows_per_partition,
            malformed_rate=malformed_rate,
            workers=workers,
        )
    )


def entry() -> None:
    """The ``charassets`` command: ``main``, then every object the command left frozen out of the cyclic garbage
    collector, so that the interpreter's shutdown does not walk them all once more (Dagster's, MLflow's and torch's
    objects: ~2 s of `make demo`, measured). Exit handlers still run (logging, MLflow, Dagster); every file this
    project writes is closed by then."""
    try:
        main()
    finally:
        gc.freeze()


if __name__ == "__main__":
    entry()
