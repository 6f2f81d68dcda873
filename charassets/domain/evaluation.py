"""Scoring an extraction output against a gold file: accuracy, coverage, per-class figures, calibration.

Gold format (JSONL, or CSV with the same column names; lists in CSV cells are ``|``-separated):
- ``id``: the input row's id (the ``id`` of the extraction output);
- ``status`` (optional): ``ok``, ``ambiguous`` or ``no_character``;
- one column per scored field, by key or display name in any case (``hair_color`` or
  ``Hair Color``): the expected value, or a list meaning "any of these". For a
  multi-valued field (Hair Style), a prediction is right when every value it gives is in
  the list. Values are compared through the field's families (``double bun`` counts as
  ``bun``) where the ontology declares them;
- ``dropped`` (optional): the fields whose evidence the post did not carry. Without it, a
  value the output took from the post's tags counts as "evidence", any other as "filled".
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from charassets.domain.ontology import FieldSpec, Ontology

UNKNOWN = "unknown"
RELIABILITY_CUTS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def read_rows(path: str | Path) -> list[dict]:
    """JSONL or CSV rows as dicts (CSV list cells split on ``|``)."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        for r in rows:
            for k, v in list(r.items()):
                if isinstance(v, str) and "|" in v:
                    r[k] = [x.strip() for x in v.split("|") if x.strip()]
                elif v == "":
                    r[k] = None
        return rows
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _as_list(v) -> list[str]:
    if v is None:
        return []
    return [str(x) for x in v] if isinstance(v, list) else [str(v)]


class _Field:
    def __init__(self, spec: FieldSpec, families: dict[str, str]):
        self.spec, self.families = spec, families

    def family(self, value: str) -> str:
        return self.families.get(value, value)

    def right(self, predicted, gold: list[str]) -> bool:
        allowed = {self.family(g) for g in gold}
        values = _as_list(predicted)
        return bool(values) and all(self.family(v) in allowed for v in values)

    def known(self, predicted) -> bool:
        values = _as_list(predicted)
        return bool(values) and values != [UNKNOWN]


def _gold_fields(gold_rows: list[dict], ontology: Ontology) -> dict[str, FieldSpec]:
    """Gold column name -> field, matched case-insensitively on key or display name."""
    lookup = {}
    for f in ontology.fields:
        lookup[f.key.lower()] = f
        lookup[f.name.lower()] = f
    cols = {c for r in gold_rows for c in r}
    return {c: lookup[c.lower()] for c in cols if c.lower() in lookup}


def _rate(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def evaluate(gold_rows: list[dict], output_rows: list[dict], ontology: Ontology) -> dict:
    """The report as a dict (see :func:`format_report`)."""
    out = {str(r["id"]): r for r in output_rows}
    gold_cols = _gold_fields(gold_rows, ontology)
    report: dict = {"rows": len(gold_rows), "matched": sum(str(g["id"]) in out for g in gold_rows), "fields": {}}

    with_status = [g for g in gold_rows if g.get("status")]
    right = sum(1 for g in with_status if (out.get(str(g["id"])) or {}).get("status") == g["status"])
    confusion: dict[str, dict[str, int]] = {}
    for g in with_status:
        got = (out.get(str(g["id"])) or {}).get("status", "missing")
        confusion.setdefault(g["status"], {}).setdefault(got, 0)
        confusion[g["status"]][got] += 1
    report["status"] = {"accuracy": _rate(right, len(with_status)), "n": len(with_status), "confusion": confusion}

    for col, spec in sorted(gold_cols.items(), key=lambda kv: [f.key for f in ontology.fields].index(kv[1].key)):
        fld = _Field(spec, ontology.families.get(spec.key, {}))
        groups = {"evidence": [0, 0, 0], "dropped": [0, 0, 0]}  # rows, covered, right
        points: list[tuple[float, bool]] = []
        per_class: dict[str, dict[str, int]] = {}
        for g in gold_rows:
            expected = _as_list(g.get(col))
            if not expected or (g.get("status") not in (None, "ok")):
                continue
            o = out.get(str(g["id"])) or {}
            attr = ((o.get("attributes") or {}).get(spec.name) or {}) if o.get("status") == "ok" else {}
            predicted, conf, source = attr.get("value"), float(attr.get("confidence") or 0.0), attr.get("source")
            if "dropped" in g:
                group = "dropped" if spec.key in _as_list(g.get("dropped")) else "evidence"
            else:
                group = "evidence" if source in (None, "tags") else "dropped"
            covered = fld.known(predicted)
            ok = covered and fld.right(predicted, expected)
            groups[group][0] += 1
            groups[group][1] += covered
            groups[group][2] += ok
            if covered:
                points.append((conf, ok))
                for v in _as_list(predicted):
                    c = per_class.setdefault(fld.family(v), {"tp": 0, "fp": 0, "fn": 0, "support": 0})
                    c["tp" if fld.family(v) in {fld.family(e) for e in expected} else "fp"] += 1
            for e in {fld.family(x) for x in expected} if len(expected) == 1 or spec.cardinality == "single" else []:
                c = per_class.setdefault(e, {"tp": 0, "fp": 0, "fn": 0, "support": 0})
                if len(expected) == 1:
                    c["support"] += 1
                    if not ok:
                        c["fn"] += 1
        entry = {}
        for name, (n, covered, ok) in groups.items():
            entry[name] = {
                "rows": n,
                "coverage": _rate(covered, n),
                "accuracy": _rate(ok, covered),  # right among the values given
                "right_of_all": _rate(ok, n),  # right among every row (a miss counts as wrong)
            }
        entry["reliability"] = [
            {
                "min_confidence": c,
                "n": sum(1 for p, _ in points if p >= c),
                "accuracy": _rate(sum(1 for p, r in points if p >= c and r), sum(1 for p, _ in points if p >= c)),
            }
            for c in RELIABILITY_CUTS
        ]
        entry["bins"] = _bins(points)
        entry["per_class"] = {
            k: {
                "precision": _rate(v["tp"], v["tp"] + v["fp"]),
                "recall": _rate(v["support"] - v["fn"], v["support"]),
                "support": v["support"],
            }
            for k, v in sorted(per_class.items())
        }
        report["fields"][spec.name] = entry
    return report


def _bins(points: list[tuple[float, bool]], edges=(0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0001)) -> list[dict]:
    """Confidence bins: mean confidence against share right (the reliability diagram)."""
    out = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = [(p, r) for p, r in points if lo <= p < hi]
        if inside:
            out.append(
                {
                    "bin": f"[{lo:.2f}, {min(hi, 1.0):.2f}]",
                    "n": len(inside),
                    "mean_confidence": round(sum(p for p, _ in inside) / len(inside), 4),
                    "accuracy": round(sum(r for _, r in inside) / len(inside), 4),
                }
            )
    return out


def format_report(report: dict) -> str:
    """The report as plain text tables."""

    def pct(x):
        return "   -  " if x is None else f"{x:6.3f}"

    lines = [
        f"rows in gold: {report['rows']}, matched in output: {report['matched']}",
        f"subject status accuracy: {pct(report['status']['accuracy'])}  (n={report['status']['n']})  {report['status']['confusion']}",
        "",
        f"{'field':<14}{'evidence: n':>12}{'cover':>7}{'acc':>7}   {'dropped: n':>11}{'cover':>7}{'acc':>7}{'right':>7}   conf>=0.9: acc (n)",
    ]
    for name, e in report["fields"].items():
        ev, dr = e["evidence"], e["dropped"]
        r9 = next(r for r in e["reliability"] if r["min_confidence"] == 0.9)
        lines.append(
            f"{name:<14}{ev['rows']:>12}{pct(ev['coverage'])} {pct(ev['accuracy'])}   {dr['rows']:>11}{pct(dr['coverage'])} {pct(dr['accuracy'])} {pct(dr['right_of_all'])}   {pct(r9['accuracy'])} ({r9['n']})"
        )
    lines += ["", "reliability (values with confidence >= c: share right, n):"]
    cuts = "".join(f"{'>=' + str(c):>14}" for c in RELIABILITY_CUTS)
    lines.append(f"{'field':<14}{cuts}")
    for name, e in report["fields"].items():
        lines.append(f"{name:<14}" + "".join(f"{pct(r['accuracy']):>8} {r['n']:>5}" for r in e["reliability"]))
    return "\n".join(lines)


def reliability_plot(report: dict, path: str | Path) -> Path:
    """One reliability diagram per field (mean confidence against share right, per bin), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fields = list(report["fields"].items())
    fig, axes = plt.subplots(1, max(len(fields), 1), figsize=(3 * max(len(fields), 1), 3.2), squeeze=False)
    for ax, (name, e) in zip(axes[0], fields, strict=False):
        xs = [b["mean_confidence"] for b in e["bins"]]
        ys = [b["accuracy"] for b in e["bins"]]
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
        ax.scatter(xs, ys, s=[max(8, min(200, b["n"])) for b in e["bins"]])
        ax.set(title=name, xlabel="confidence", xlim=(0, 1.02), ylim=(0, 1.02))
    axes[0][0].set_ylabel("share right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
