"""The book a reader opens: built under the smoke profile, every page checked in headless Chromium.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them when run as root);
without them the test skips and says so. Screenshots of every page land in ``_build/screenshots/``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from analysis import book
from analysis.config import ROOT

STUDY_CHAPTERS = (
    "causal_tracing",
    "information_aware_compression",
    "factorization",
    "capability_density",
    "adaptive_compress",
    "variance_vs_importance",
    "synthesis",
)
BUILD = ROOT / "_build" / "smoke"  # its own jupyter cache: smoke outputs never reach the cpu book
SHOTS = ROOT / "_build" / "screenshots"
BAD_OUTPUT = re.compile(r"Traceback \(most recent call last\)|\b[A-Z]\w*Warning\b|\b[A-Z]\w*Error\b:|IProgress")
NEEDS = "headless Chromium: install Debian's packages `chromium` and `chromium-driver` (apt-get install chromium chromium-driver)"


def toc_pages() -> list[str]:
    return book.chapters()


@pytest.fixture(scope="module")
def driver():
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip(f"needs {NEEDS}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,2000",
    ):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    yield drv
    drv.quit()


@pytest.fixture(scope="module")
def html(driver):
    """The book built under the smoke profile (results come from the disk cache the chapter tests filled),
    or an already built book's HTML folder named by $BOOK_HTML (e.g. the cpu book: `BOOK_HTML=_build/html`)."""
    if os.environ.get("BOOK_HTML"):
        return Path(os.environ["BOOK_HTML"]).resolve()
    env = {**os.environ, "ANALYSIS_PROFILE": "smoke", "ANALYSIS_QUIET": "1"}
    jb = ROOT / ".venv" / "bin" / "jupyter-book"
    out = subprocess.run(
        [
            str(jb if jb.exists() else "jupyter-book"),
            "build",
            "-W",
            "-n",
            "--keep-going",
            "--path-output",
            str(BUILD),
            str(ROOT),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert out.returncode == 0, f"the smoke book did not build:\n{out.stdout[-3000:]}\n{out.stderr[-2000:]}"
    return BUILD / "_build" / "html"


@pytest.mark.parametrize("page", toc_pages())
def test_page_in_a_browser(driver, html, page):
    path = html / "book" / f"{page}.html"
    assert path.exists(), f"{path} was not built"
    driver.get(path.as_uri())
    # the theme keeps its light/dark mode in localStorage, shared by every file:// page of the run; after
    # many pages headless Chromium has handed it an empty mode ("Got invalid theme mode: ."): start each
    # page from the theme's own default so that its console speaks only of this page
    driver.execute_script("localStorage.setItem('mode', 'auto'); localStorage.setItem('theme', 'auto');")
    driver.get_log("browser")  # the log holds this page's messages from here on
    driver.refresh()
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / f"{page}.png"))
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, f"console errors on {page}: {errors[:3]}"
    outputs = driver.execute_script(
        "return Array.from(document.querySelectorAll('.cell_output')).map(e => e.innerText)"
    )
    bad = [m.group(0) for text in outputs for m in [BAD_OUTPUT.search(text)] if m]
    assert not bad, f"{page}: an output cell shows {bad[:3]}"
    widths = driver.execute_script(
        "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete ? i.naturalWidth : 0])"
    )
    broken = [src for src, w in widths if not w]
    assert not broken, f"{page}: images that did not load: {broken[:3]}"
    links = driver.execute_script(
        'return Array.from(document.querySelectorAll(\'a[href$=".csv"], a[href$=".json"]\')).map(a => a.href)'
    )
    missing = [href for href in links if href.startswith("file://") and not os.path.exists(href[len("file://") :])]
    assert not missing, f"{page}: download links to files that do not exist: {missing[:3]}"
    if page in STUDY_CHAPTERS:
        assert links, f"{page} offers no table for download"
        assert any(h.endswith(f"/results/{page}/verdicts.json") for h in links), f"{page} shows no verdict table"
        figures = driver.execute_script("return document.querySelectorAll('.cell_output img').length")
        assert figures >= 1, f"{page} shows no figure"


def test_scoreboard_lists_every_claim(driver, html):
    """The intro's scoreboard shows every claim of every study chapter's verdict table."""
    import json

    driver.get((html / "book" / "intro.html").as_uri())
    text = driver.execute_script("return document.body.innerText")
    missing = []
    for page in [p for p in STUDY_CHAPTERS if p in toc_pages()]:
        path = html / "results" / page / "verdicts.json"
        assert path.exists(), f"{page} wrote no verdict table"
        missing += [
            f"{page}: {row['claim'][:60]}"
            for row in json.loads(path.read_text())
            if row["claim"].split("\n")[0][:60] not in text
        ]
    assert not missing, f"claims missing from the scoreboard: {missing[:3]}"
