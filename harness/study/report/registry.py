"""The report's sections: a registry of functions ``section(ctx, doc)``.

A section is one function that reads the ``ReportContext`` (built once by ``build_report``) and
writes its body to a ``Doc`` (``harness.study.report.render``): paragraphs, tables and plots,
the plots (and any table files) saved into ``ctx.folder``. Registered with
``@section(title, order=...)``, it is written under its title, after the sections of smaller
``order``. A section with nothing to say (no index logs, no gem5 runs, an option turned it off)
returns without writing anything, and the report then has no heading for it either.

Adding a section touches one or two files: the decorated function goes in the module of its
group (``results``: the sweep's speed-ups and runs; ``index_logs``: the index logs' locality and
policy study), or in a new module of ``harness/study/report/``, which is then imported in the
package's ``__init__.py`` (importing a module registers its sections). Sections import this
module and the renderer, never the reverse, and never each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.study.report.render import Doc


@dataclass(frozen=True)
class ReportContext:
    """What the sections read, built once by ``build_report``."""

    results: pd.DataFrame  # the collected table, one row per run (harness.study.collect)
    headline: pd.DataFrame  # each configuration's and policy's best reservation (harness.study.headline)
    verdict: list[str]  # the first screen's answer, one paragraph per backbone
    unreadable: list[str]  # run folders the collection skipped, with the reason
    sweep: Path  # the sweep folder
    logs: list[Path]  # its index logs (folders with a metadata.json)
    folder: Path  # the report folder being written: plots and table files go here
    policies: bool = True  # include the policy capacity study of the index logs
    locality: bool = True  # include the locality analysis of the index logs


Write = Callable[[ReportContext, Doc], None]


@dataclass(frozen=True)
class Section:
    """A registered section: its heading (title, level), its place (order) and its function."""

    title: str
    order: int
    level: int
    write: Write


SECTIONS: list[Section] = []


def section(title: str, order: int, level: int = 2) -> Callable[[Write], Write]:
    """Register the decorated ``write(ctx, doc)`` as the report section ``title`` (a heading of
    ``level``), written after the sections of smaller ``order``; two sections may not share a
    title or an order."""

    def register(write: Write) -> Write:
        for s in SECTIONS:
            if s.title == title or s.order == order:
                raise ValueError(f"report section {title!r} (order {order}) clashes with "
                                 f"{s.title!r} (order {s.order})")
        SECTIONS.append(Section(title, order, level, write))
        return write

    return register


def write_sections(ctx: ReportContext) -> Doc:
    """The report's document: every registered section in order, each under its heading, and
    nothing for a section that writes nothing."""
    doc = Doc()
    for s in sorted(SECTIONS, key=lambda s: s.order):
        body = Doc()
        s.write(ctx, body)
        if body.blocks:
            doc.h(s.level, s.title)
            doc.extend(body)
    return doc
