"""Sphinx hooks for an offline, executable book.

- Pages read last, on every build: the intro (its scoreboard reads the verdicts every study chapter
  records) and the "How this book was built" appendix (it reads their run records). Sphinx reads
  changed pages in alphabetical order, so both are moved to the end and always re-read.
- MathJax is served from the book itself (the PyPI package django-static-mathjax ships MathJax 3):
  readers offline, and the machines that build the book, have no CDN.
- The tables chapters wrote (``analysis.book.table``) are copied to ``<html>/results/``, from the
  result cache where they outlive any one build.
- Each ``<script>`` appears once per page (sphinx-thebe can register its config script twice,
  which the browser reports as "Identifier 'THEBE_JS_URL' has already been declared").
"""

import shutil
from importlib import resources
from pathlib import Path

LAST = ("book/intro", "book/build_info")
MATHJAX_DIR = "mathjax"


def _outdated(app, env, added, changed, removed):
    return [doc for doc in LAST if doc in env.found_docs]


def _read_last(app, env, docnames):
    for doc in LAST:
        if doc in docnames:
            docnames.remove(doc)
            docnames.append(doc)


def _mathjax_source() -> Path:
    return Path(str(resources.files("mathjax"))) / "static" / "mathjax" / "es5"


def _local_mathjax(app):
    app.config.mathjax_path = f"{MATHJAX_DIR}/tex-mml-chtml.js"


def _copy_assets(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    shutil.copytree(_mathjax_source(), Path(app.outdir) / "_static" / MATHJAX_DIR, dirs_exist_ok=True)
    from analysis.config import CACHE_DIR, get_profile

    results = CACHE_DIR / "book_results" / get_profile().name
    if results.exists():
        shutil.copytree(results, Path(app.outdir) / "results", dirs_exist_ok=True)


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for js in scripts:
        attributes = getattr(js, "attributes", {})
        name = getattr(js, "filename", js) or ""  # an inline script's filename is None or ""
        key = (str(name), tuple(sorted((k, str(v)) for k, v in attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(js)
    scripts[:] = unique


def setup(app):
    app.connect("env-get-outdated", _outdated)
    app.connect("env-before-read-docs", _read_last)
    app.connect("builder-inited", _local_mathjax)
    app.connect("build-finished", _copy_assets)
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"parallel_read_safe": False, "parallel_write_safe": True}
