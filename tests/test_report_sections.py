"""The report's sections as a registry (harness.study.report.registry): a section added by a test
is written under its title, in its order, in both report.md and report.html; a section that
writes nothing adds nothing, not even its heading."""

import html
import re

import pandas as pd
import pytest
from helpers import tiny_spec

from harness.study.report import build_report, registry
from harness.study.report.render import Doc
from harness.study.spec import loads_spec
from harness.study.sweep import execute

EXTRA = "A section added by a test"
EMPTY = "A section with nothing to say"


@pytest.fixture
def sections(monkeypatch):
    """The registry, restored after the test (its registrations are the test's own)."""
    monkeypatch.setattr(registry, "SECTIONS", list(registry.SECTIONS))
    return registry


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep")
    with pytest.MonkeyPatch.context() as m:  # indexer fits go to the session's cache (conftest.private_cache)
        m.setenv("DSA_LLC_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        execute(loads_spec(tiny_spec('"deepseek-v3.2"', '"64KiB"', '"token-lru"')), folder, jobs=1, progress=False)
    return folder


def extra(ctx, doc):
    from harness.core.plotting import plt, save

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    doc.p(f"**{len(ctx.results)} runs**, read from the context.")
    doc.table(pd.DataFrame({"policy": ["token-lru"], "speed-up": ["1.00x"]}))
    doc.image(save(fig, ctx.folder / "extra.png"))


def nothing(ctx, doc):
    return


def headings(markdown: str) -> list[str]:
    return re.findall(r"^#+ (.*)$", markdown, re.M)


def html_headings(page: str) -> list[str]:
    return [html.unescape(t) for t in re.findall(r"<h\d>(.*?)</h\d>", page)]


def test_a_registered_section_is_written_in_order_and_an_empty_one_adds_nothing(sweep, sections, tmp_path):
    build_report(sweep, tmp_path / "before", policies=False, locality=False)
    sections.section(EXTRA, order=25)(extra)  # between "Every policy's best reservation" (20) and the plots (30)
    sections.section(EMPTY, order=26)(nothing)
    build_report(sweep, tmp_path / "after", policies=False, locality=False)
    before, after = ((tmp_path / d / "report.md").read_text() for d in ("before", "after"))
    page = (tmp_path / "after" / "report.html").read_text()
    titles = headings(before)
    i = titles.index("Every policy's best reservation") + 1
    expected = titles[:i] + [EXTRA] + titles[i:]
    assert headings(after) == expected and html_headings(page) == expected
    # the new section, and nothing else, is added; the empty one leaves no trace
    block = (f"## {EXTRA}\n\n**3 runs**, read from the context.\n\n| policy | speed-up |\n|---|---|\n"
             "| token-lru | 1.00x |\n\n![extra](extra.png)\n\n")
    assert block in after and after.replace(block, "") == before
    assert EMPTY not in after and EMPTY not in page
    assert "<p><b>3 runs</b>, read from the context.</p>" in page
    assert re.search(r'<img alt="extra" src="data:image/png;base64,[A-Za-z0-9+/=]{100,}">', page)
    assert (tmp_path / "after" / "extra.png").exists()


def test_sections_are_ordered_by_order_not_by_registration(sections):
    sections.SECTIONS[:] = []
    sections.section("second", order=2)(lambda ctx, doc: doc.p("b"))
    sections.section("empty", order=3)(nothing)
    sections.section("first", order=1, level=1)(lambda ctx, doc: doc.p("a"))
    doc = sections.write_sections(ctx=None)
    assert doc.markdown() == "# first\n\na\n\n## second\n\nb\n"
    assert "<body><h1>first</h1><p>a</p><h2>second</h2><p>b</p></body>" in doc.html()


def test_a_section_may_not_take_another_ones_title_or_order(sections):
    taken, n = sections.SECTIONS[0], len(sections.SECTIONS)
    for title, order in ((taken.title, 999), ("new", taken.order)):
        with pytest.raises(ValueError, match="clashes with"):
            sections.section(title, order)(nothing)
    assert len(sections.SECTIONS) == n  # neither was registered


def test_doc_renders_markdown_and_html_and_skips_a_plot_not_drawn():
    doc = Doc()
    doc.h(2, "a < b")
    doc.p("**bold** & plain")
    doc.table(pd.DataFrame({"name": ["x"], "value": [1.5]}))
    doc.images([None])  # a plot that was not drawn
    assert doc.markdown() == "## a < b\n\n**bold** & plain\n\n| name | value |\n|---|---|\n| x | 1.500 |\n"
    assert ("<h2>a &lt; b</h2><p><b>bold</b> &amp; plain</p><div class=\"scroll\"><table>"
            "<thead><tr><th class=\"text\">name</th><th>value</th></tr></thead>"
            "<tbody><tr><td class=\"text\">x</td><td>1.500</td></tr></tbody></table></div></body>") in doc.html()
