# Two commands on a fresh machine: `make demo` and `make test`. Each builds .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench docs fuzz clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m mesh.demo

lint: $(STAMP)
	$(VENV)/bin/ruff check mesh agents patterns tests bench examples
	$(VENV)/bin/ruff format --check mesh agents patterns tests bench examples
	$(VENV)/bin/mypy mesh agents patterns

test: lint
	$(PY) -m pytest

BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) bench/run.py

DOCS_STAMP := $(VENV)/.docs-installed

$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,docs]'
	touch $(DOCS_STAMP)

# The documentation site into site/; strict: a warning, a broken link or anchor fails it.
# NO_MKDOCS_2_WARNING silences mkdocs-material's banner about its end of life (not a build warning).
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# The hostile-input properties with many more examples, and 20,000 messages at a live node.
fuzz: $(STAMP)
	MESH_FUZZ_MESSAGES=20000 $(PY) -m pytest tests/test_hostile_input.py --no-cov \
		--hypothesis-profile=fuzz -p no:cacheprovider

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage*
