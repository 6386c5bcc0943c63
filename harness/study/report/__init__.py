"""The study report: does reserving LLC ways for KV tokens speed up DSA decode, by how much, on
which backbone, and why? Markdown and a self-contained HTML page with PNG plots.

``build_report`` collects the sweep, builds the ``ReportContext`` once, writes the registered
sections in order into a ``Doc`` and the report folder atomically. The modules:
``registry`` (the context and the sections' registry; how to add a section), ``render`` (the
document, as Markdown and as HTML) and the sections by group: ``results`` (the first screen, the
speed-ups of every policy, the sweep's plots, all runs), ``index_logs`` (locality, policies),
``host_tier`` (the host tier's runs) and ``levers`` (the indexer levers' speed-up against recall).
"""

from __future__ import annotations

from pathlib import Path

from harness.core.errors import UserError
from harness.study.headline import headline, verdict
from harness.study.report import (  # noqa: F401  (importing registers their sections)
    host_tier,
    index_logs,
    levers,
    results,
    what_helps,
)
from harness.study.report.registry import ReportContext, write_sections

__all__ = ["build_report"]


def build_report(sweep_dir: str | Path, out: str | Path, policies: bool = True, locality: bool = True,
                 overwrite: bool = False) -> dict:
    """Collect the sweep and write report.md, report.html, the plots and the tables into ``out``
    (an earlier report there is replaced only with ``overwrite``: ``harness.core.outputs``): the
    registered sections (``harness.study.report.registry``) in order."""
    from harness.core.files import atomic_path
    from harness.core.outputs import check_output_folder, mark_folder
    from harness.study.collect import collect

    check = lambda: check_output_folder(out, "report", overwrite)  # noqa: E731
    check()
    sweep_dir = Path(sweep_dir)
    df, bad = collect(sweep_dir)
    if df.empty:
        raise UserError(f"{sweep_dir} has no runs to report")
    h = headline(df)
    logs = sorted(p for p in (sweep_dir / "logs").iterdir() if (p / "metadata.json").exists()) \
        if (sweep_dir / "logs").is_dir() else []
    with atomic_path(Path(out), check) as tmp:
        tmp.mkdir()
        mark_folder(tmp, "report")
        ctx = ReportContext(results=df, headline=h, verdict=verdict(df), unreadable=bad, sweep=sweep_dir,
                            logs=logs, folder=tmp, policies=policies, locality=locality)
        doc = write_sections(ctx)
        df.to_parquet(tmp / "results.parquet", index=False)
        h.to_csv(tmp / "headline.csv", index=False)
        (tmp / "report.md").write_text(doc.markdown())
        (tmp / "report.html").write_text(doc.html())
    return {"results": df, "headline": h, "verdict": ctx.verdict, "unreadable": bad}
