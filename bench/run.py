"""Benchmark the tag path through Dagster: ``make bench N=1000000``.

Generates N demo records (cached per N under bench/out), registers them, runs every
partition through the asset graph in-process, and prints wall time and records/s per
stage (from Dagster's step events), Dagster's own overhead, peak RSS of this process and
of the generator, and Delta table sizes. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--rows-per-partition", type=int, default=50_000)
    ap.add_argument("--per-run", type=int, default=50, help="partitions per Dagster run")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out"))
    args = ap.parse_args()
    out = Path(args.out) / f"n{args.records}"
    data, lake_root = out / "data", out / "lake"

    t0 = time.perf_counter()
    if not (data / "sources.yaml").exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "charassets.cli",
                "generate",
                "--records",
                str(args.records),
                "--out",
                str(data),
                "--rows-per-partition",
                str(args.rows_per_partition),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    gen_s = time.perf_counter() - t0
    gen_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    import shutil

    import dagster as dg

    from charassets.definitions import build_definitions
    from charassets.defs.runner import build_everything

    shutil.rmtree(lake_root, ignore_errors=True)  # every run starts from an empty lake and model store
    shutil.rmtree(out / "mlartifacts", ignore_errors=True)
    (out / "mlflow.db").unlink(missing_ok=True)
    env = {**os.environ, "CHARASSETS_SOURCES": str(data / "sources.yaml"), "CHARASSETS_LAKE": str(lake_root), "CHARASSETS_HOME": str(out)}
    defs = build_definitions(env)
    lake = defs.resources["lake"].lake()
    t1 = time.perf_counter()
    with dg.DagsterInstance.ephemeral() as instance:
        build = build_everything(defs, instance, log_level="WARNING", per_run=args.per_run)
        wall = time.perf_counter() - t1
        report, trained, published, phases = build.prepared, build.trained, build.published, build.seconds
        step_s: dict[str, float] = {}
        for run_id in [*report.runs, trained.run_id, *published.runs]:
            starts = {}
            for ev in instance.all_logs(run_id):
                if ev.dagster_event is None:
                    continue
                kind, step = ev.dagster_event.event_type_value, ev.dagster_event.step_key
                if kind == "STEP_START":
                    starts[step] = ev.timestamp
                elif kind == "STEP_SUCCESS":
                    name = step + (" (publish)" if run_id in published.runs else "")
                    step_s[name] = step_s.get(name, 0.0) + ev.timestamp - starts[step]
    registry = lake.read("raw", "source_partitions")
    records = int(registry.get_column("row_count").sum())
    tables = {
        f"{s}/{t}": lake.table_stats(s, t)
        for s, t in [
            ("raw", "records"),
            ("raw", "rejects"),
            ("clean", "tags"),
            ("labels", "tag_attributes"),
            ("marts", "character_attributes"),
        ]
    }
    full_string = full_string_rate(lake, defs)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    stages = {k: {"seconds": round(v, 1), "records_per_s": round(records / v)} for k, v in step_s.items()}
    in_steps = sum(step_s.values())

    print(
        f"\ncharassets bench: {records:,} records, {registry.height} partitions (largest {registry['row_count'].max():,} rows), "
        f"{len(report.runs)} Dagster run(s), {os.cpu_count()} cores"
    )
    print(f"generate: {gen_s:.1f}s (peak RSS {gen_rss:.0f} MB{', cached' if gen_s < 1 else ''})")
    print(f"{'stage':<34}{'seconds':>9}{'records/s':>12}")
    for k, v in stages.items():
        print(f"{k:<34}{v['seconds']:>9}{v['records_per_s']:>12,}")
    print(
        f"register {report.seconds['register']}s; steps {in_steps:.1f}s of {wall:.1f}s wall: Dagster outside steps {100 * (wall - in_steps) / wall:.1f}%"
    )
    for name, st in tables.items():
        print(f"{name:<34}{st['files']:>5} files {st['bytes'] / 1e6:>9.1f} MB  (version {st['version']})")
    print(f"phases: {phases}")
    emb = stages.get("features__embeddings", {})
    pred = stages.get("models__head_predictions (publish)", {})
    print(
        f"embeddings pooled: {emb.get('records_per_s', 0):,} records/s (incl. I/O); full-string: {full_string:,} records/s (sample of 2,000)"
    )
    print(f"head inference (all champion heads, incl. masking and I/O): {pred.get('records_per_s', 0):,} records/s")
    print(f"peak RSS (pipeline process): {peak:.0f} MB")
    print(
        json.dumps(
            {
                "records": records,
                "partitions": registry.height,
                "wall_s": round(wall, 1),
                "records_per_s": round(records / wall),
                "peak_rss_mb": round(peak),
                "generate_s": round(gen_s, 1),
                "generate_peak_rss_mb": round(gen_rss),
                "dagster_overhead_pct": round(100 * (wall - in_steps) / wall, 1),
                "stages": stages,
                "tables": tables,
            }
        )
    )


def full_string_rate(lake, defs, n: int = 2000) -> int:
    """Full-string encoding (each record's whole tag list as one text) on a sample: too slow to run on millions here."""
    from charassets.domain.features import encode_full, feature_tags

    clean = lake.scan("clean", "tags").head(n).collect()
    embedder = defs.resources["embedder"].embedder()
    t = time.perf_counter()
    encode_full(feature_tags(clean), embedder)
    return round(clean.height / (time.perf_counter() - t))


if __name__ == "__main__":
    main()
