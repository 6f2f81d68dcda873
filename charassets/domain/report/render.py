"""The dataset report drawn: ``report_plots`` (matplotlib charts as PNG data URIs) and ``render_html``
(the Jinja template filled into one self-contained HTML file, plots and thumbnails inlined)."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from concurrent.futures import wait
from pathlib import Path
from typing import Any

from charassets.domain.lending import lent

TEMPLATE = Path(__file__).resolve().parents[2] / "templates" / "dataset_report.html.j2"


# ---------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    _pyplot().close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _status_chart(status: dict[str, int]) -> str:
    fig, ax = _pyplot().subplots(figsize=(5, 2.4))
    ax.barh(list(status), list(status.values()), color="#4a7bb7")
    ax.set(xlabel="records", title="records by status")
    return _png(fig)


def _field_chart(name: str, f: dict[str, Any]) -> str:
    values = f["values"][::-1]
    fig, ax = _pyplot().subplots(figsize=(5, 0.6 + 0.22 * max(len(values), 1)))
    ax.barh([v["value"] for v in values] or ["(none)"], [v["n"] for v in values] or [0], color="#5b9e6b")
    ax.set(xlabel="ok records", title=f"{name} (unknown {f['unknown_rate'] or 0:.1%})")
    return _png(fig)


def _rank_frequency_chart(characters: list[int], tags: list[int]) -> str:
    fig, ax = _pyplot().subplots(figsize=(5, 3.2))
    for label, data in (("characters", characters), ("tags", tags)):
        if data:
            ax.loglog(range(1, len(data) + 1), data, label=label)
    ax.set(xlabel="rank", ylabel="records", title="rank-frequency (log-log)")
    ax.legend()
    return _png(fig)


def _head_chart(field: str, classes: list[dict[str, Any]]) -> str:
    import matplotlib.ticker

    fig, ax = _pyplot().subplots(figsize=(4.2, 3))
    ax.scatter([c["support"] for c in classes], [c["recall"] for c in classes], s=14)
    for c in classes:
        ax.annotate(c["class"], (c["support"], c["recall"]), fontsize=6)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels overlap on a narrow range
    ax.set(xlabel="validation support (log)", ylabel="recall", ylim=(-0.05, 1.05), title=f"{field} head: recall by support")
    return _png(fig)


def _charts(figures: dict[str, Any]) -> dict[str, tuple[Callable[..., str], tuple]]:
    """Each chart of the report: its name, the function drawing it and what that is given."""
    tail = figures["long_tail"]
    return {
        "status": (_status_chart, (figures["overview"]["by_status"],)),
        **{f"field:{name}": (_field_chart, (name, f)) for name, f in figures["fields"].items()},
        "rank_frequency": (_rank_frequency_chart, (tail["characters"]["rank_frequency"], tail["tags"]["rank_frequency"])),
        **{f"head:{field}": (_head_chart, (field, classes)) for field, classes in tail["heads"].items() if classes},
    }


def report_plots(figures: dict[str, Any]) -> dict[str, str]:
    """The report's charts as PNG data URIs: status, one bar chart per field, rank-frequency, head recall.

    With worker processes lent (``lending``), each chart is drawn in one of them (~0.1 s of a core each, a second of
    the report in all); else here, one after another."""
    charts = _charts(figures)
    pool, _ = lent()
    if pool is None:
        return {name: draw(*args) for name, (draw, args) in charts.items()}
    futures = {name: pool.submit(draw, *args) for name, (draw, args) in charts.items()}
    try:
        return {name: future.result() for name, future in futures.items()}
    except BaseException:  # none outlives the report: the queued ones cancelled, the running ones waited for
        for future in futures.values():
            future.cancel()
        wait(futures.values())
        raise


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
