"""Build the Jupyter Book in the smoke size and check the pages in headless Chromium.

What a reader would see, checked on the DOM after MathJax and the widget manager have run:
no raw TeX in the prose, a figure on every chapter notebook, no error output, no object repr such as
``<matplotlib.legend.Legend at 0x...>`` in any output, no display equation wider than its box
(measured in the browser: a MathJax container whose scrollWidth exceeds its clientWidth, or that runs
past the article's right edge), no caption shared by two figures and no caption used twice on a
page; and a full-height screenshot of every page (written to ``_build/screenshots/`` to be looked at).

Chromium comes from Debian (``apt-get install -y chromium fonts-dejavu-core``). Without it the test
is skipped, unless ``RFM_TEACH_REQUIRE_BOOK`` is set (CI sets it, so CI never skips).
``RFM_TEACH_BOOK_TOC=/path/toc.yml`` builds with another table of contents (for work in progress).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest
from book_pages import toc_pages

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "smoke" / "_build" / "html"  # scripts/build_book.sh, RFM_TEACH_MODE=smoke
SCREENSHOTS = ROOT / "_build" / "screenshots"
BUILD_TIMEOUT_S = 3600
# Raw TeX delimiters that survive only if MathJax did not typeset the page.
RAW_TEX = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$\$")
# An object's default repr in an output (HTML-escaped in the page): <matplotlib.legend.Legend at 0x7f...>.
OBJECT_REPR = re.compile(r"&lt;(?:matplotlib[\w.]*|[\w.]+(?: object)?)[^&]{0,80}? at 0x[0-9a-fA-F]+&gt;|&lt;matplotlib\.")
# Notebook pages without a figure by design.
NO_FIGURE_PAGES = {"notebooks/cheatsheet"}
# Pages taller than this are screenshotted in their top part only.
MAX_SCREENSHOT_HEIGHT = 16000
# Injected into a copy of each page: after MathJax has typeset, measure every display equation and
# the page height, and write the result as JSON into <pre id="rfm-check"> for --dump-dom to return.
MEASURE_JS = """
<script>
(function () {
  function report(timedOut) {
    var article = document.querySelector("article") || document.querySelector("main") || document.body;
    var right = article.getBoundingClientRect().right;
    var out = {height: document.documentElement.scrollHeight, clipped: [], displays: 0, timed_out: timedOut};
    document.querySelectorAll('mjx-container[display="true"]').forEach(function (el, i) {
      out.displays += 1;
      var box = el.parentElement;
      var wide = el.scrollWidth > el.clientWidth + 1 || box.scrollWidth > box.clientWidth + 1;
      var past = el.getBoundingClientRect().right > right + 1;
      if (wide || past) {
        var mml = el.querySelector("mjx-assistive-mml");
        out.clipped.push({index: i, width: el.scrollWidth, box: box.clientWidth,
                          text: (mml ? mml.textContent : el.textContent).slice(0, 80)});
      }
    });
    var pre = document.createElement("pre");
    pre.id = "rfm-check";
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  }
  var done = false;
  function once(flag) { if (!done) { done = true; report(flag); } }
  function wait() {
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
      MathJax.startup.promise.then(function () { setTimeout(function () { once(false); }, 200); });
    } else if (!document.querySelector('script[src*="mathjax"]')) {
      once(false);
    } else {
      setTimeout(wait, 50);
    }
  }
  setTimeout(wait, 0);
  setTimeout(function () { once(true); }, 25000);  // report anyway (flagged) if the promise never settles
})();
</script>
"""

pytestmark = pytest.mark.slow


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


CHROMIUM = _chromium()
if CHROMIUM is None and not os.environ.get("RFM_TEACH_REQUIRE_BOOK"):
    pytest.skip(
        "headless Chromium not found (apt-get install -y chromium fonts-dejavu-core); "
        "set RFM_TEACH_REQUIRE_BOOK=1 to make this a failure",
        allow_module_level=True,
    )


def _toc_path() -> Path:
    return Path(os.environ.get("RFM_TEACH_BOOK_TOC", ROOT / "_toc.yml"))


def _browser(*args: str, budget_ms: int = 10000) -> subprocess.CompletedProcess:
    """Run headless Chromium offline with a fresh profile; time budget lets MathJax and widgets finish."""
    assert CHROMIUM is not None, "RFM_TEACH_REQUIRE_BOOK is set but no Chromium was found"
    with tempfile.TemporaryDirectory() as profile:
        command = [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}", *args,
        ]
        return subprocess.run(command, capture_output=True, text=True, timeout=180)


class _Page(HTMLParser):
    """Visible prose of a page (outside MathJax output, code, scripts and styles) and its figures."""

    SKIP = {"mjx-container", "script", "style", "pre", "code", "textarea"}

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0  # inside how many skipped elements
        self.text: list[str] = []
        self.figures = 0
        self.classes: list[str] = []
        self.figure_depth = 0  # inside a <figure>
        self.figure_images: list[int] = []  # images per <figure>, in page order
        self.captions: list[str] = []
        self.in_caption = 0

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.classes.append(attributes.get("class") or "")
        src = attributes.get("src") or ""
        if tag == "img" and "_images/" in src and "colab-badge" not in src:  # the badge is not a figure
            self.figures += 1
            if self.figure_depth:
                self.figure_images[-1] += 1
        if tag == "figure":
            self.figure_depth += 1
            self.figure_images.append(0)
        if tag == "figcaption":
            self.in_caption += 1
            self.captions.append("")
        if tag in self.SKIP:
            self.depth += 1

    def handle_endtag(self, tag):
        if tag in self.SKIP and self.depth:
            self.depth -= 1
        if tag == "figure" and self.figure_depth:
            self.figure_depth -= 1
        if tag == "figcaption" and self.in_caption:
            self.in_caption -= 1

    def handle_data(self, data):
        if not self.depth:
            self.text.append(data)
        if self.in_caption:
            self.captions[-1] += data


@pytest.fixture(scope="module")
def built_book() -> list[str]:
    """Build once per session (smoke size); return the pages of the TOC."""
    toc = _toc_path()
    pages = toc_pages(toc)
    # Jupyter Book only warns about a TOC entry with no source file; a missing chapter must fail.
    missing = [page for page in pages if not any((ROOT / f"{page}{ext}").exists() for ext in (".md", ".ipynb"))]
    assert not missing, f"{toc} lists pages with no .md or .ipynb source: {missing}"
    env = {**os.environ, "RFM_TEACH_MODE": "smoke"}
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    if jupyter_book.exists():  # the same environment as this test run
        env["JUPYTER_BOOK"] = str(jupyter_book)
    # --fresh: the execution cache cannot see changes to rfm_teach, so every notebook runs again.
    command = [str(ROOT / "scripts" / "build_book.sh"), "--fresh"]
    if toc != ROOT / "_toc.yml":
        command += ["--toc", str(toc.resolve())]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    assert result.returncode == 0, f"book build failed (rc {result.returncode}):\n{_cause(result.stdout + result.stderr)}"
    return pages


def _cause(log: str) -> str:
    """The part of a failed build log that names the cause: the first failing cell, else the tail."""
    log = re.sub(r"\x1b\[[0-9;]*m", "", log)  # drop terminal colours
    start = log.find("Executing notebook failed")
    return log[start:start + 5000] if start >= 0 else log[-5000:]


def _dom(page: str) -> str:
    html = HTML / f"{page}.html"
    assert html.exists(), f"the build wrote no {html}"
    result = _browser("--dump-dom", html.as_uri())
    assert result.returncode == 0 and "<html" in result.stdout, f"chromium could not load {html}: {result.stderr[-2000:]}"
    return result.stdout


def test_every_page_renders_math_figures_and_no_errors(built_book):
    problems = []
    for page in built_book:
        dom = _dom(page)
        parsed = _Page()
        parsed.feed(dom)
        text = " ".join(parsed.text)
        raw = RAW_TEX.findall(text)
        if raw:
            at = RAW_TEX.search(text).start()
            problems.append(f"{page}: raw TeX {raw[:3]} near {text[max(0, at - 60):at + 60]!r}")
        if page.startswith("notebooks/") and page not in NO_FIGURE_PAGES and parsed.figures == 0:
            problems.append(f"{page}: no figure")
        reprs = OBJECT_REPR.findall(dom)
        if reprs:
            problems.append(f"{page}: object repr in an output: {reprs[:3]} (end the cell with plt.show() or ';')")
        shared = [n for n in parsed.figure_images if n > 1]
        if shared:
            problems.append(f"{page}: {len(shared)} caption(s) shared by several images {shared}: one figure per caption")
        captions = [re.sub(r"^\s*(Fig\.|Figure)\s*[\d.]+\s*", "", c).strip() for c in parsed.captions]
        repeated = sorted({c[:60] for c in captions if c and captions.count(c) > 1})
        if repeated:
            problems.append(f"{page}: the same caption on several figures: {repeated}")
        if "Traceback (most recent call last)" in dom or any("traceback" in c.split() for c in parsed.classes):
            problems.append(f"{page}: an error output (traceback) is on the page")
        if page.startswith("notebooks/") and "mjx-container" not in dom:
            problems.append(f"{page}: MathJax did not run (no mjx-container)")
    assert not problems, "\n".join(problems)


def _measure(page: str) -> dict:
    """Display-equation widths and page height, measured in Chromium on a copy of the page with MEASURE_JS."""
    import json

    html = HTML / f"{page}.html"
    probe = html.with_name(f"{html.stem}.__measure__.html")  # same folder: relative assets still resolve
    text = html.read_text()
    if 'class="math' not in text:  # nothing to typeset (MathJax's promise need not settle): nothing to clip
        return {"height": None, "clipped": [], "displays": 0, "timed_out": False}
    # Without the widget manager: its pending fetches pause Chromium's virtual time, so the measuring
    # script would never run. Widgets do not change the width of an equation.
    text = re.sub(r'<script[^>]*src="[^"]*widgets/[^"]*"[^>]*>\s*</script>', "", text)
    head, tail = text.rsplit("</body>", 1)  # the last one: outputs may contain the string too
    probe.write_text(head + MEASURE_JS + "</body>" + tail)
    try:
        for _ in range(3):  # a loaded machine can end Chromium's run before the script reports: try again
            result = _browser("--dump-dom", "--window-size=1280,1600", probe.as_uri(), budget_ms=30000)
            found = re.search(r'<pre id="rfm-check">(.*?)</pre>', result.stdout, re.S)
            if found:
                break
    finally:
        probe.unlink(missing_ok=True)
    assert found, (f"{page}: the measuring script did not report in three tries (MathJax never finished?); "
                   f"Chromium rc {result.returncode}: {result.stderr[-1000:]}")
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))


#: Pages whose too-wide display equations other engineers are splitting (issue 9): reported as xfail.
PENDING_CLIPPED = {"notebooks/05_stein_control_variates": "05's display equations are being split (estimator engineer)"}


def test_no_display_equation_is_clipped(built_book):
    problems, pending = [], []
    for page in built_book:
        measured = _measure(page)
        if measured["timed_out"]:  # a slow machine: try once more before calling it a failure
            measured = _measure(page)
        if measured["timed_out"]:
            problems.append(f"{page}: MathJax had not finished after 25 s of virtual time, twice")
        for eq in measured["clipped"]:
            (pending if page in PENDING_CLIPPED else problems).append(
                f"{page}: display equation {eq['index']} is {eq['width']} px wide in a {eq['box']} px box: "
                f"{eq['text']!r} (split it with an aligned environment)")
    assert not problems, "\n".join(problems + pending)
    if pending:
        pytest.xfail("only pages listed in PENDING_CLIPPED have clipped equations:\n" + "\n".join(pending))


def test_screenshot_every_page(built_book):
    """A full-height screenshot of every page in _build/screenshots/, to be looked at by a person."""
    from PIL import Image, ImageStat

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    problems = []
    for page in built_book:
        measured = _measure(page)["height"] or 3000  # pages with no maths are not measured
        height = min(max(int(measured), 800), MAX_SCREENSHOT_HEIGHT)
        png = SCREENSHOTS / f"{page.replace('/', '__')}.png"
        png.unlink(missing_ok=True)
        result = _browser(f"--screenshot={png}", f"--window-size=1280,{height}", (HTML / f"{page}.html").as_uri())
        if result.returncode != 0 or not png.exists():
            problems.append(f"{page}: no screenshot: {result.stderr[-500:]}")
            continue
        with Image.open(png) as image:
            grey = image.convert("L")
            if grey.size != (1280, height):
                problems.append(f"{page}: screenshot is {grey.size}, expected (1280, {height})")
            if ImageStat.Stat(grey).stddev[0] <= 10:
                problems.append(f"{png} is (almost) a single colour")
    assert not problems, "\n".join(problems)
