"""The Snakemake report of a toy run, opened in a real headless browser.

`snakemake --report` bundles the aggregate rule's figures (with their captions
from workflow/report/*.rst) into one self-contained HTML page, a React app. A
static check of the file would not notice a script error or a figure that does
not decode, so the page is loaded in Debian's chromium: a few lines added to a
copy of the page record JavaScript errors, decode every figure, open the first
one the way a click in the menu would, and write the outcome into the DOM,
which `--dump-dom` returns. A screenshot is kept as a test artifact:
results/test-artifacts/report.png.

The toy run is conftest's `toy_study` (one per session, shared with test_dvc.py). chromium is
installed by .ci/setup-system.sh; without it the browser part is skipped.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, snakemake_in

pytestmark = pytest.mark.slow

ARTIFACTS = ROOT / "results/test-artifacts"
# No sandbox (root in a container), no GPU, nothing that phones home, a fresh profile.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--window-size=1400,1000",
    # run the page's timers to completion before dumping/screenshotting
    "--virtual-time-budget=20000",
]

# Added first in <head>: every uncaught error and rejected promise is recorded.
ERROR_HOOK = """<script>
window.__errors = [];
window.addEventListener('error', function (e) { window.__errors.push(String(e.message)); });
window.addEventListener('unhandledrejection', function (e) { window.__errors.push('rejection: ' + e.reason); });
</script>"""
# Added before </body>: once the React app exists, decode every figure, open the
# first one (what clicking it under Results > Figures does), then report.
CHECKER = """<script>
(function () {
  var figures = Object.keys(results).filter(function (p) { return results[p].mime_type.indexOf('image/') === 0; });
  var decoded = [], broken = [];
  figures.forEach(function (p) {
    var img = new Image();
    img.onload = function () { (img.naturalWidth > 0 ? decoded : broken).push(p); };
    img.onerror = function () { broken.push(p); };
    img.src = results[p].data_uri;
  });
  var tries = 0;
  var waiting = setInterval(function () {
    if ((typeof app === 'undefined' || !app) && ++tries < 100) { return; }
    clearInterval(waiting);
    if (typeof app !== 'undefined' && app && figures.length) { app.showCategory('Figures'); }
    setTimeout(function () {
      if (typeof app !== 'undefined' && app && figures.length) {
        app.setView({content: 'img', contentPath: results[figures[0]].data_uri, resultPath: figures[0]});
      }
      setTimeout(function () {
        var shown = Array.prototype.find.call(document.querySelectorAll('#app img'),
          function (i) { return figures.length && i.src === results[figures[0]].data_uri; });
        document.body.setAttribute('data-check', JSON.stringify({
          errors: window.__errors, app: typeof app !== 'undefined' && !!app,
          figures: figures, decoded: decoded, broken: broken,
          categories: Object.keys(categories),
          shown: shown ? {src: figures[0], width: shown.naturalWidth, height: shown.naturalHeight} : null,
          text: document.querySelector('#app').innerText}));
      }, 1000);
    }, 300);
  }, 100);
})();
</script>"""


def chromium() -> str:
    """The browser binary. Tests never install system packages: .ci/setup-system.sh does."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("no chromium on PATH: install the Debian package `chromium` (.ci/setup-system.sh does)")
    return found


def browse(browser: str, page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    if profile.exists():
        shutil.rmtree(profile)
    return subprocess.run(
        [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.fixture(scope="module")
def report(toy_study) -> Path:
    study = toy_study
    # the aggregate rule's outputs are what the report shows, so build it for that target
    snakemake_in(study.repo, "aggregate_results", "--report", "results/report.html")
    return study.repo / "results/report.html"


def test_report_bundles_figures_with_captions(report):
    text = report.read_text()
    results = json.loads(re.search(r"var results = (\{.*?\});\n", text, re.S).group(1))
    figures = {p: r for p, r in results.items() if r["mime_type"] == "image/png"}
    assert {Path(p).name for p in figures} >= {
        "accuracy_vs_step.png",
        "code_frequency_vs_step.png",
        "clip_ablation.png",
        "transitions.png",
        "audit_contamination.png",
        "audit_baselines.png",
        "audit_clip_probe.png",
    }
    for path, entry in figures.items():
        assert entry["caption"].strip(), f"{path} has no caption"
        assert entry["data_uri"].startswith("data:image/png")
    assert "results/summary.md" in results
    # the verdict table is a report item of its own
    assert results["results/aggregate/verdict.csv"]["caption"].strip()


def test_report_renders_in_a_headless_browser(report, tmp_path):
    browser = chromium()
    page = tmp_path / "report-check.html"
    head, body_end, tail = report.read_text().rpartition("</body>")
    page.write_text(head.replace("<head>", "<head>" + ERROR_HOOK, 1) + CHECKER + body_end + tail)
    dom = browse(browser, page, tmp_path / "profile", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-3000:]
    m = re.search(r'data-check="([^"]*)"', dom.stdout)
    assert m, "the page never finished loading:\n" + dom.stderr[-3000:]
    check = json.loads(html.unescape(m.group(1)))
    assert check["errors"] == [], check["errors"]
    assert check["app"], "the report's React app did not start"
    assert len(check["figures"]) >= 4 and sorted(check["decoded"]) == sorted(check["figures"]), check
    assert check["broken"] == []
    assert {"Figures", "Summary", "Audit"} <= set(check["categories"])
    assert check["shown"] and check["shown"]["width"] > 100 and check["shown"]["height"] > 100, check["shown"]
    # the menu lists the figures, as the screenshot shows
    assert "accuracy_vs_step.png" in check["text"], check["text"][:2000]

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report.png"
    res = browse(browser, page, tmp_path / "profile", f"--screenshot={shot}")
    assert res.returncode == 0 and shot.stat().st_size > 10_000, res.stderr[-3000:]
    print(f"screenshot: {shot}", file=sys.stderr)
