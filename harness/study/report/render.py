"""The report's document: headings, paragraphs, tables and PNG images, rendered both as Markdown
(``report.md``, the images beside it) and as one self-contained HTML page (``report.html``, the
images embedded). The report's sections write to a ``Doc``, never Markdown or HTML
themselves."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import pandas as pd

from harness.core.mdtable import markdown_table

_NUMBER = re.compile(r"^[-+]?[\d.,]+(e[-+]?\d+)?x?$|^$")


def _html_table(df: pd.DataFrame) -> str:
    """An HTML table: numbers right-aligned, text left-aligned, floats to 3 decimals."""
    def cell(v) -> str:
        if isinstance(v, float):
            return "" if v != v else f"{v:.3f}"
        return html.escape(str(v))

    cells = [[cell(v) for v in row] for row in df.itertuples(index=False)]
    left = [not all(_NUMBER.match(r[i]) for r in cells) for i in range(len(df.columns))]
    style = ['' if not lt else ' class="text"' for lt in left]
    head = "".join(f"<th{st}>{html.escape(str(c))}</th>" for c, st in zip(df.columns, style))
    rows = "".join("<tr>" + "".join(f"<td{st}>{v}</td>" for v, st in zip(r, style)) + "</tr>" for r in cells)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


class Doc:
    """Blocks rendered both as Markdown and as a self-contained HTML page."""

    def __init__(self):
        self.blocks: list[tuple[str, object]] = []

    def h(self, level, text):
        self.blocks.append(("h", (level, text)))

    def p(self, text):
        self.blocks.append(("p", text))

    def table(self, df: pd.DataFrame):
        self.blocks.append(("table", df))

    def image(self, path):
        if path:
            self.blocks.append(("image", Path(path)))

    def images(self, paths):
        for path in paths:
            self.image(path)

    def extend(self, other: Doc):
        self.blocks.extend(other.blocks)

    def markdown(self) -> str:
        out = []
        for kind, v in self.blocks:
            if kind == "h":
                out.append("#" * v[0] + " " + v[1])
            elif kind == "p":
                out.append(v)
            elif kind == "table":
                out.append(markdown_table(v))
            else:
                out.append(f"![{v.stem}]({v.name})")
        return "\n\n".join(out) + "\n"

    def html(self) -> str:
        body = []
        for kind, v in self.blocks:
            if kind == "h":
                body.append(f"<h{v[0]}>{html.escape(v[1])}</h{v[0]}>")
            elif kind == "p":
                text = html.escape(v)
                text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
                body.append(f"<p>{text}</p>")
            elif kind == "table":
                body.append(f'<div class="scroll">{_html_table(v)}</div>')  # a wide table scrolls, not the page
            else:
                data = base64.b64encode(v.read_bytes()).decode()
                body.append(f'<img alt="{v.stem}" src="data:image/png;base64,{data}">')
        style = ("body{font-family:sans-serif;max-width:1360px;margin:1.5em auto;padding:0 1em;line-height:1.4}"
                 "table{border-collapse:collapse;font-size:12px;margin:1em 0}"
                 "th{background:#f4f4f4;font-weight:600}"
                 "td,th{border-bottom:1px solid #ddd;padding:3px 6px;text-align:right}"
                 ".text{text-align:left}img{max-width:100%}.scroll{overflow-x:auto}")
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>dsa-llc report</title>"
                f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")
