"""Benchmark the tag path through Dagster: ``make bench N=1000000``.

Generates N demo records (cached per N under bench/out), registers them, runs every
partition through the asset graph (``--workers`` processes running Dagster runs
concurrently against one persistent instance), and prints wall time and records/s per
stage (summed step time from Dagster's step events, across workers), Dagster's own
overhead, peak RSS of every process, and Delta table sizes. The last line is one JSON
object.
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
    ap.add_argument("--malformed-rate", type=float, default=0.01, help="share of malformed rows in the generated data")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes running partition runs concurrently")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out"))
    args = ap.parse_args()
    out = Path(args.out) / f"n{args.records}-m{args.malformed_rate}"
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
                "--malformed-rate",
                str(args.malformed_rate),
                "--workers",
                str(args.workers),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    gen_s = time.perf_counter() - t0
    gen_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    import shutil

    import dagster as dg

    from charassets.definitions import build_definitions
    from charassets.runner import build_everything, peak_rss_mb

    # every run starts from an empty lake, model store and Dagster instance
    for d in (lake_root, out / "mlartifacts", out / "dagster"):
        shutil.rmtree(d, ignore_errors=True)
    (out / "mlflow.db").unlink(missing_ok=True)
    env = {**os.environ, "CHARASSETS_SOURCES": str(data / "sources.yaml"), "CHARASSETS_LAKE": str(lake_root), "CHARASSETS_HOME": str(out)}
    defs = build_definitions(env)
    lake = defs.resources["lake"].lake()
    t1 = time.perf_counter()
    (out / "dagster").mkdir(parents=True)
    # the instance's own config (local storage under this folder, no telemetry): without one Dagster warns on every start
    (out / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.DagsterInstance.local_temp(str(out / "dagster")) as instance:
        build = build_everything(defs, instance, log_level="WARNING", per_run=args.per_run, workers=args.workers, env=env)
        wall = time.perf_counter() - t1
        report, published, phases = build.prepared, build.published, build.seconds
        step_s: dict[str, float] = {}
        run_s = 0.0  # summed run durations (runs overlap when several workers run them)
        for run_id in [*report.runs, *build.training_run_ids, *published.runs]:
            starts, bounds = {}, []
            for ev in instance.all_logs(run_id):
                if ev.dagster_event is None:
                    continue
                kind, step = ev.dagster_event.event_type_value, ev.dagster_event.step_key
                bounds.append(ev.timestamp)
                if kind == "STEP_START":
                    starts[step] = ev.timestamp
                elif kind == "STEP_SUCCESS":
                    name = step + (" (publish)" if run_id in published.runs else "")
                    step_s[name] = step_s.get(name, 0.0) + ev.timestamp - starts[step]
            run_s += max(bounds) - min(bounds)
    registry = lake.read("raw", "source_partitions")
    records = int(registry.get_column("row_count").sum())
    status = dict(lake.scan("marts", "character_attributes").group_by("status").len().collect().iter_rows())
    rows_out = sum(n for s, n in status.items() if s != "rejected")
    rows_quarantined = status.get("rejected", 0)
    tables_before = {name: lake.table_stats(*name.split("/")) for name in ("features/tag_vectors", "marts/character_attributes")}
    t2 = time.perf_counter()
    from charassets.defs.maintenance import maintain_lake

    maintenance = maintain_lake(lake, retention_hours=0, target_size=128 * 2**20)  # no reader needs old versions here
    maintenance_s = time.perf_counter() - t2
    from charassets.defs.maintenance import TABLES

    tables = {f"{s}/{t}": lake.table_stats(s, t) for s, t in TABLES if lake.exists(s, t)}
    exports_dir = lake_root / "exports"
    tables["exports (files)"] = {
        "files": sum(1 for p in exports_dir.rglob("*") if p.is_file()),
        "bytes": sum(p.stat().st_size for p in exports_dir.rglob("*") if p.is_file()),
        "version": 0,
    }
    full_string = full_string_rate(lake, defs)
    # the plain polars floor over the same files, in this session (the ratio is the figure to watch on a noisy machine)
    base = json.loads(
        subprocess.run(
            [sys.executable, str(ROOT / "bench" / "baseline.py"), str(data / "sources.yaml")], check=True, capture_output=True, text=True
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    images = image_rate()
    peak = peak_rss_mb()
    workers_rss = {**report.worker_peak_rss_mb}
    for pid, mb in published.worker_peak_rss_mb.items():
        workers_rss[pid] = max(mb, workers_rss.get(pid, 0))
    peak_all = max([peak, gen_rss, *workers_rss.values()])
    stages = {k: {"seconds": round(v, 1), "records_per_s": round(records / v)} for k, v in step_s.items()}
    in_steps = sum(step_s.values())
    # Dagster's share: the part of every run's duration spent outside its steps, plus the
    # time between runs in the parent (registration, training and publish orchestration)
    outside = (run_s - in_steps) / run_s

    print(
        f"\ncharassets bench: {records:,} records, {registry.height} partitions (largest {registry['row_count'].max():,} rows), "
        f"{len(report.runs) + 1 + len(published.runs)} Dagster run(s), {args.workers} worker process(es), {os.cpu_count()} cores"
    )
    print(f"generate: {gen_s:.1f}s (peak RSS {gen_rss:.0f} MB{', cached' if gen_s < 1 else ''})")
    print(f"{'stage (step time, summed over workers)':<48}{'seconds':>9}{'records/s':>12}")
    for k, v in stages.items():
        print(f"{k:<48}{v['seconds']:>9}{v['records_per_s']:>12,}")
    print(
        f"register {report.seconds['register']}s; wall {wall:.1f}s; steps {in_steps:.1f}s of {run_s:.1f}s run time: "
        f"Dagster outside steps {100 * outside:.1f}%"
    )
    for name, st in tables.items():
        print(f"{name:<34}{st['files']:>5} files {st['bytes'] / 1e6:>9.1f} MB  (version {st['version']})")
    print(
        f"rows in {records:,} = out {rows_out:,} ({', '.join(f'{s} {n:,}' for s, n in sorted(status.items()) if s != 'rejected')}) "
        f"+ quarantined {rows_quarantined:,}: {'exact' if records == rows_out + rows_quarantined else 'MISMATCH'}; "
        f"failed checks: {build.failed_checks or 'none'}"
    )
    print(f"maintenance (compact, checkpoint, vacuum every table) {maintenance_s:.1f}s:")
    for name, r in maintenance.items():
        print(f"  {name:<32}" + ", ".join(f"{k}={v}" for k, v in r.items()))
    print(f"phases: {phases}")
    emb = stages.get("features__embeddings", {})
    pred = stages.get("models__head_predictions (publish)", {})
    print(
        f"embeddings pooled: {emb.get('records_per_s', 0):,} records/s (incl. I/O); full-string: {full_string:,} records/s (sample of 2,000)"
    )
    print(f"head inference (all champion heads, incl. masking and I/O): {pred.get('records_per_s', 0):,} records/s")
    print(f"images: decode + signals (animeface): {images['images_per_s_per_core']} images/s per core ({images['source']})")
    print(f"peak RSS: parent {peak:.0f} MB, workers {sorted(workers_rss.values())} MB, generator {gen_rss:.0f} MB")
    phases_rss = ", ".join(f"{k} {v:.0f}" for k, v in build.parent_peak_rss_mb.items())
    print(f"parent peak RSS (MB) once each phase was done: {phases_rss}; after the bench's own checks {peak:.0f}")
    print(
        f"baseline (plain polars: read, normalise, vocabulary join, per-record aggregate; one process): {base['baseline_s']}s "
        f"= {base['records_per_s']:,} records/s; whole build / baseline = {wall / base['baseline_s']:.1f}"
    )
    cpu_per_m = {k: round(v * 1_000_000 / records, 1) for k, v in step_s.items()}
    print("step CPU-s per 1M records: " + ", ".join(f"{k} {v}" for k, v in sorted(cpu_per_m.items(), key=lambda kv: -kv[1])))
    lake_bytes = sum(st["bytes"] for st in tables.values())
    print(
        json.dumps(
            {
                "records": records,
                "partitions": registry.height,
                "wall_s": round(wall, 1),
                "records_per_s": round(records / wall),
                "baseline_s": base["baseline_s"],
                "ratio": round(wall / base["baseline_s"], 2),
                "step_cpu_s_per_1m": cpu_per_m,
                "lake_mb": round(lake_bytes / 1e6, 1),
                "peak_rss_mb": round(peak_all),
                "parent_peak_rss_mb_by_phase": {k: round(v) for k, v in build.parent_peak_rss_mb.items()},
                "peak_rss_mb_by_process": {
                    "parent": round(peak),
                    "generator": round(gen_rss),
                    **{f"worker-{p}": m for p, m in workers_rss.items()},
                },
                "workers": args.workers,
                "phases_s": phases,
                "generate_s": round(gen_s, 1),
                "dagster_overhead_pct": round(100 * outside, 1),
                "rows_in": records,
                "rows_out": rows_out,
                "rows_quarantined": rows_quarantined,
                "failed_checks": build.failed_checks,
                "stages": stages,
                "tables": tables,
                "tables_before_maintenance": tables_before,
                "maintenance": maintenance,
                "maintenance_s": round(maintenance_s, 1),
                "images": images,
            }
        )
    )


def image_rate(seconds: float = 5.0) -> dict:
    """Decode + image signals (animeface faces and colours), one process: images/s per core.

    On ``$CHARASSETS_SHARED_DATA/images_dev`` (512px illustrations) when present, else on
    generated 512px images.
    """
    import io

    from PIL import Image

    from charassets.domain.images.decode import decode_image
    from charassets.domain.images.signals import image_signals

    shared = Path(os.environ.get("CHARASSETS_SHARED_DATA", ROOT.parent / "shared" / "data")) / "images_dev"
    files = sorted(shared.glob("*.webp"))
    if files:
        blobs, source = [f.read_bytes() for f in files], str(shared)
    else:
        blobs, source = [], "generated"
        for i in range(16):
            buf = io.BytesIO()
            Image.effect_mandelbrot((512, 512), (-2 + i / 20, -1.5, 1, 1.5), 64).convert("RGB").save(buf, format="WEBP")
            blobs.append(buf.getvalue())
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        image_signals(decode_image(blobs[n % len(blobs)]).image)
        n += 1
    return {"images": n, "images_per_s_per_core": round(n / (time.perf_counter() - t), 1), "source": source}


def full_string_rate(lake, defs, n: int = 2000) -> int:
    """Full-string encoding (each record's whole tag list as one text) on a sample: too slow to run on millions here."""
    from charassets.domain.models.features import encode_full, feature_tags

    clean = lake.scan("clean", "tags").head(n).collect()
    embedder = defs.resources["embedder"].embedder()
    t = time.perf_counter()
    encode_full(feature_tags(clean), embedder)
    return round(clean.height / (time.perf_counter() - t))


if __name__ == "__main__":
    main()
