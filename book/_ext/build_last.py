"""Sphinx hook: the "How this book was built" appendix is read (and executed) after every chapter,
and on every build, so it reports the run records the chapters just wrote."""

LAST = "book/build_info"


def _outdated(app, env, added, changed, removed):
    return [LAST] if LAST in env.found_docs else []


def _read_last(app, env, docnames):
    if LAST in docnames:
        docnames.remove(LAST)
        docnames.append(LAST)


def setup(app):
    app.connect("env-get-outdated", _outdated)
    app.connect("env-before-read-docs", _read_last)
    return {"parallel_read_safe": False, "parallel_write_safe": True}
