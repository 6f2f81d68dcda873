"""The dataset report: figures from the lake (``figures``), then charts and one HTML file (``render``)."""

from charassets.domain.report.figures import dataset_figures
from charassets.domain.report.render import figures_json, render_html, report_plots

__all__ = ["dataset_figures", "figures_json", "render_html", "report_plots"]
