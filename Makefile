# Two commands on a fresh machine: `make demo` and `make test`. Each builds .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench docs fuzz e2e clean

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

# One worker per core, each taking whole files (their module fixtures start servers once).
test: lint
	$(PY) -m pytest --numprocesses=auto --dist=loadfile

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

E2E_STAMP := $(VENV)/.e2e-installed
E2E_DIR := $(VENV)/e2e
LLAMA_SERVER := $(E2E_DIR)/bin/llama-server
# llama.cpp's source comes in the sdist of its Python bindings on PyPI (pinned here).
LLAMA_CPP_SDIST := llama-cpp-python==0.3.36

$(E2E_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,e2e]'
	touch $(E2E_STAMP)

# llama.cpp's OpenAI-compatible server, built once from source (several minutes on two cores).
$(LLAMA_SERVER): | $(E2E_STAMP)
	rm -rf $(E2E_DIR)/src $(E2E_DIR)/build
	$(PY) -m pip download --quiet --no-deps --no-binary :all: $(LLAMA_CPP_SDIST) -d $(E2E_DIR)/src
	tar xzf $(E2E_DIR)/src/*.tar.gz -C $(E2E_DIR)/src
	$(VENV)/bin/cmake -S $(E2E_DIR)/src/llama_cpp_python-*/vendor/llama.cpp -B $(E2E_DIR)/build \
		-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
		-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF > $(E2E_DIR)/build.log 2>&1 \
		|| (tail -40 $(E2E_DIR)/build.log; exit 1)
	$(VENV)/bin/cmake --build $(E2E_DIR)/build --target llama-server -j $$(nproc) >> $(E2E_DIR)/build.log 2>&1 \
		|| (tail -40 $(E2E_DIR)/build.log; exit 1)
	mkdir -p $(E2E_DIR)/bin && cp $(E2E_DIR)/build/bin/llama-server $(LLAMA_SERVER)
	rm -rf $(E2E_DIR)/src $(E2E_DIR)/build

# Every example on a real model: Gemma 3 270M on a local llama-server, and OpenAI or Anthropic
# when OPENAI_API_KEY or ANTHROPIC_API_KEY is set; prints which examples passed.
e2e: $(E2E_STAMP) $(LLAMA_SERVER)
	MESH_E2E_SERVER=$(LLAMA_SERVER) $(PY) -m pytest tests/e2e -m e2e --no-cov -v -p no:cacheprovider

# The hostile-input properties with many more examples, and 20,000 messages at a live node.
fuzz: $(STAMP)
	MESH_FUZZ_MESSAGES=20000 $(PY) -m pytest tests/test_hostile_input.py --no-cov \
		--hypothesis-profile=fuzz -p no:cacheprovider

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage*
