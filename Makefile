# Deep Learning, Dissected - the two commands a newcomer needs are `make book` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torchattacks (test-only) pins requests~=2.25.1, which Sphinx cannot use: keep it outside the venv's
# site-packages (installed without its pins) so that `pip check` stays clean.
VENDOR := $(VENV)/vendor
TEST_ENV := HELPERS_PROFILE=smoke HELPERS_PROGRESS=0 MPLBACKEND=Agg PYTHONPATH=$(VENDOR)
NOTEBOOKS := $(wildcard notebooks/[0-9][0-9]_*.ipynb)

.PHONY: all install book book-force test notebooks student bench clean

all: book

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps --target $(VENDOR) torchattacks==3.5.1
	$(BIN)/pip check
	touch $@

install: $(VENV)/.installed

# Jupyter Book's cache does not see changes to `helpers`: any change to it wipes the cache.
_build/.helpers-stamp: $(wildcard helpers/*.py)
	rm -rf _build/.jupyter_cache
	mkdir -p _build && touch $@

book: $(VENV)/.installed _build/.helpers-stamp
	HELPERS_PROGRESS=0 $(BIN)/jupyter-book build .
	@echo "Open _build/html/index.html"

book-force: $(VENV)/.installed
	rm -rf _build/.jupyter_cache
	HELPERS_PROGRESS=0 $(BIN)/jupyter-book build --all .

test: $(VENV)/.installed
	$(TEST_ENV) $(BIN)/python -m pytest tests notebooks --nbval-lax --durations=15

# Re-record the committed outputs (smoke profile, clean metadata).
notebooks: $(VENV)/.installed
	$(TEST_ENV) $(BIN)/python scripts/execute_notebooks.py --in-place $(NOTEBOOKS)
	$(BIN)/python scripts/make_student.py

# The student edition: solution cells become TODO stubs (student/NN_topic.ipynb).
student: $(VENV)/.installed
	$(BIN)/python scripts/make_student.py

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/bench_separation.py
	$(BIN)/python benchmarks/bench_training.py

clean:
	rm -rf _build
