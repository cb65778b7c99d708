# Deep Learning, Dissected - the two commands a newcomer needs are `make book` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torchattacks (test-only) pins requests~=2.25.1, which Sphinx cannot use: keep it outside the venv's
# site-packages (installed without its pins) so that `pip check` stays clean.
VENDOR := $(VENV)/vendor
TEST_ENV := HELPERS_PROFILE=smoke HELPERS_DATA= HELPERS_PROGRESS=0 MPLBACKEND=Agg PYTHONPATH=$(VENDOR)

.PHONY: all install book book-run book-fa locales test nbval notebooks student bench rehearse clean

all: book

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps --target $(VENDOR) torchattacks==3.5.1
	$(BIN)/pip check
	touch $@

install: $(VENV)/.installed

# The book as recorded: the committed notebooks' outputs, rendered without executing anything.
book: $(VENV)/.installed
	$(BIN)/jupyter-book build .
	@echo "Open _build/html/index.html"

# For an instructor with a GPU: build the book by executing every notebook in the default profile
# ("auto": full with a GPU) into _build/run, leaving the committed notebooks as they are.
book-run: $(VENV)/.installed
	mkdir -p _build/run
	sed 's/^\(  execute_notebooks:\).*/\1 force/' _config.yml > _build/run/_config.yml
	HELPERS_PROGRESS=0 $(BIN)/jupyter-book build --all --config _build/run/_config.yml --path-output _build/run .
	@echo "Open _build/run/_build/html/index.html"

# Unit tests, and every chapter executed once (smoke) for its tests and the nbval-tagged cells.
test: $(VENV)/.installed
	$(TEST_ENV) $(BIN)/python -m pytest tests --durations=15

# nbval on its own, as instructors know it (executes every notebook again).
nbval: $(VENV)/.installed
	$(TEST_ENV) $(BIN)/python -m pytest --nbval-lax notebooks/

# Re-record the book: each chapter in the profile and data of its RECORDING (scripts/record_book.py --list).
# Real data: torchvision downloads, or offline DATA_DIR=/folder/with/mnist_train.npz,...
notebooks: $(VENV)/.installed
	MPLBACKEND=Agg PYTHONPATH=$(VENDOR) $(BIN)/python scripts/record_book.py $(if $(DATA_DIR),--data-dir "$(DATA_DIR)")
	$(BIN)/python scripts/make_student.py

# The student edition: solution cells become TODO stubs (student/NN_topic.ipynb).
student: $(VENV)/.installed
	$(BIN)/python scripts/make_student.py

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/bench_separation.py
	$(BIN)/python benchmarks/bench_training.py

# Rehearse all 8 chapters in the cpu and full profiles (HELPERS_REHEARSAL=1: their real code path with capped
# counts, offline stand-ins) and refresh their workload: benchmarks/workload.json and the set-up page's table.
# `make test` runs the same 16 rehearsals (tests/test_rehearsal.py, marked `rehearsal`).
rehearse: $(VENV)/.installed
	HELPERS_PROGRESS=0 MPLBACKEND=Agg PYTHONPATH=$(VENDOR) $(BIN)/python benchmarks/rehearse.py

# The Persian edition, from the same recorded notebooks: prose from locales/fa/LC_MESSAGES/*.po.
# Also regenerates the Persian Colab notebooks (locales/fa/notebooks, locales/fa/student) and the
# self-checks' Persian messages (helpers/check/messages_fa.py) from the catalogues.
book-fa: $(VENV)/.installed
	$(BIN)/python scripts/i18n.py generate
	$(BIN)/python scripts/i18n.py build

# After the English prose changed: extract its messages and merge them into locales/fa/LC_MESSAGES/*.po
# (a changed paragraph becomes an untranslated or fuzzy entry), then regenerate the Persian files.
locales: $(VENV)/.installed
	$(BIN)/python scripts/i18n.py update

clean:
	rm -rf _build
