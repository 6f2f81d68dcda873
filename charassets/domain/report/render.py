"""The dataset report drawn: ``report_plots`` (matplotlib charts as PNG data URIs) and ``render_html``
(the Jinja template filled into one self-contained HTML file, plots and thumbnails inlined)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

TEMPLATE = Path(__file__).resolve().parents[2] / "templates" / "dataset_report.html.j2"


# ---------------------------------------------------------------------------- plots


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def report_plots(figures: dict[str, Any]) -> dict[str, str]:
    """The report's charts as PNG data URIs: status, one bar chart per field, rank-frequency, head recall."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots: dict[str, str] = {}
    status = figures["overview"]["by_status"]
    fig, ax = plt.subplots(figsize=(5, 2.4))
    ax.barh(list(status), list(status.values()), color="#4a7bb7")
    ax.set(xlabel="records", title="records by status")
    plots["status"] = _png(fig)
    for name, f in figures["fields"].items():
        values = f["values"][::-1]
        fig, ax = plt.subplots(figsize=(5, 0.6 + 0.22 * max(len(values), 1)))
        ax.barh([v["value"] for v in values] or ["(none)"], [v["n"] for v in values] or [0], color="#5b9e6b")
        ax.set(xlabel="ok records", title=f"{name} (unknown {f['unknown_rate'] or 0:.1%})")
        plots[f"field:{name}"] = _png(fig)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for label, data in (
        ("characters", figures["long_tail"]["characters"]["rank_frequency"]),
        ("tags", figures["long_tail"]["tags"]["rank_frequency"]),
    ):
        if data:
            ax.loglog(range(1, len(data) + 1), data, label=label)
    ax.set(xlabel="rank", ylabel="records", title="rank-frequency (log-log)")
    ax.legend()
    plots["rank_frequency"] = _png(fig)
    for field, classes in figures["long_tail"]["heads"].items():
        if not classes:
            continue
        fig, ax = plt.subplots(figsize=(4.2, 3))
        ax.scatter([c["support"] for c in classes], [c["recall"] for c in classes], s=14)
        for c in classes:
            ax.annotate(c["class"], (c["support"], c["recall"]), fontsize=6)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels overlap on a narrow range
        ax.set(xlabel="validation support (log)", ylabel="recall", ylim=(-0.05, 1.05), title=f"{field} head: recall by support")
        plots[f"head:{field}"] = _png(fig)
    return plots


# ---------------------------------------------------------------------------- HTML


def render_html(figures: dict[str, Any], plots: dict[str, str]) -> str:
    """One self-contained HTML page: the figures, the charts and the thumbnails all inline."""
    import jinja2

    env = jinja2.Environment(autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.StrictUndefined)
    env.filters["pct"] = lambda x: "-" if x is None else f"{x:.1%}"
    env.filters["tojson_compact"] = lambda x: json.dumps(x, ensure_ascii=False)
    return env.from_string(TEMPLATE.read_text(encoding="utf-8")).render(f=figures, plots=plots)


def figures_json(figures: dict[str, Any]) -> str:
    return json.dumps(figures, indent=1, ensure_ascii=False, default=str)
