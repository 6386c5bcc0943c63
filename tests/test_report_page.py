"""The report's HTML page in a real headless browser (Debian's chromium): the first screen's table
fits a 1400 px window, and a screenshot is taken (look at it: tests/…/first_screen.png).

Marked slow: it builds a small sweep and needs chromium (`apt-get install chromium`)."""

import json
import re
import shutil
import subprocess

import pytest
from helpers import tiny_spec

from harness.study.report import build_report
from harness.study.spec import loads_spec
from harness.study.sweep import execute

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]
WIDTH, HEIGHT = 1400, 900
# measured after layout: the first table's right edge, the page's own width and the window's
MEASURE = """<script>
const t = document.querySelector('table').getBoundingClientRect();
document.title = JSON.stringify({table_right: t.right, table_top: t.top, window: window.innerWidth,
                                 page: document.documentElement.scrollWidth});
</script>"""

SPEC = tiny_spec('["native", "deepseek-v3.2", "llama-3.1-8b"]', '["64KiB", "128KiB"]',
                 '["lru", "token-lru", "bip", "streak"]', extra='\n[timing]\nplatform = "h100-sxm"\n')


def chromium(*args, user_data):
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={user_data}", f"--window-size={WIDTH},{HEIGHT}",
                           *args], capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium: apt-get install chromium")
def test_first_screen_table_fits_1400_px(tmp_path):
    execute(loads_spec(SPEC), tmp_path / "sweep", jobs=2, progress=False)
    build_report(tmp_path / "sweep", tmp_path / "report", policies=False, locality=False)
    page = tmp_path / "report" / "report.html"
    measured = tmp_path / "measured.html"
    measured.write_text(page.read_text().replace("</body>", MEASURE + "</body>"))
    dom = chromium("--dump-dom", measured.as_uri(), user_data=tmp_path / "profile").stdout
    m = json.loads(re.search(r"<title>(.*?)</title>", dom).group(1).replace("&quot;", '"'))
    assert m["table_right"] <= m["window"] and m["page"] <= m["window"], m
    assert m["table_top"] < HEIGHT, "the first table starts below the first screen"
    shot = tmp_path / "first_screen.png"
    chromium(f"--screenshot={shot}", page.as_uri(), user_data=tmp_path / "profile")
    assert shot.stat().st_size > 10_000
