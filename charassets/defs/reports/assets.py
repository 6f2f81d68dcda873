"""Reports stage: the dataset report, built from every partition of the lake."""

import dagster as dg

from charassets.defs.partitions import table_asset
from charassets.defs.resources import CatalogResource, LakeResource, MlflowResource
from charassets.domain.models.registry import ModelStore
from charassets.domain.report import dataset_figures, figures_json, render_html, report_plots

HTML = "reports/dataset_report.html"
JSON = "reports/dataset_report.json"


def head_recall(ontology, store: ModelStore) -> dict[str, list[dict]]:
    """Per trained head (champion): each class's validation recall and support, from its MLflow run."""
    out = {}
    for f in [f for f in ontology.fields if f.values]:
        report = store.champion_report(f.key)
        if report:
            per = report["metrics"]["per_class"]
            out[f.name] = [{"class": c, "recall": round(v["recall"], 4), "support": int(v["support"])} for c, v in per.items()]
    return out


@table_asset(
    "reports/dataset_report",
    kinds={"polars", "html"},
)
def dataset_report(context: dg.AssetExecutionContext, lake: LakeResource, catalog: CatalogResource, mlflow_store: MlflowResource):
    """The dataset report (HTML and JSON): distributions, the long tail, label noise and example records, over every partition."""
    table, ontology = lake.for_asset(context), catalog.ontology()
    if not table.exists("marts", "character_attributes"):
        raise dg.Failure("no final table yet: build it first (make demo, or materialize marts/character_attributes)")
    figures = dataset_figures(table, ontology, head_recall(ontology, mlflow_store.store()))
    plots = report_plots(figures)
    html_uri = lake.write_text(HTML, render_html(figures, plots))
    json_uri = lake.write_text(JSON, figures_json(figures))
    o, tail = figures["overview"], figures["long_tail"]["characters"]
    summary = "\n".join(
        [
            f"**{o['records']:,} records** in {o['partitions']} partitions: " + ", ".join(f"{k} {v:,}" for k, v in o["by_status"].items()),
            "",
            f"{tail['distinct']:,} characters; {tail['cover_50']:,} cover half of the single-character records, "
            f"{tail['cover_90']:,} cover 90%; {tail['under_5_records']:,} have fewer than 5 records.",
            "",
            "| field | unknown | top value |",
            "|---|---|---|",
            *[
                f"| {name} | {fd['unknown_rate'] or 0:.1%} | {fd['values'][0]['value'] if fd['values'] else '-'} |"
                for name, fd in figures["fields"].items()
            ],
            "",
            f"![records by status]({plots['status']})",
            "",
            f"![rank-frequency]({plots['rank_frequency']})",
        ]
    )
    context.log.info(f"dataset report: {html_uri}")
    return dg.MaterializeResult(
        metadata={
            "summary": dg.MetadataValue.md(summary),
            "html": dg.MetadataValue.path(html_uri),
            "json": dg.MetadataValue.path(json_uri),
            "records": o["records"],
            "characters": tail["distinct"],
        }
    )
