"""The study report (``harness.study.report.results``): Markdown and a self-contained HTML page
with PNG plots, written by ``build_report``."""

from harness.study.report.results import build_report

__all__ = ["build_report"]
