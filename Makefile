# One-command set-up: `make test` (install + all checks) and `make serve` (install + serve shipped models).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
TORCH_VERSION ?= 2.13.0
VENV ?= .venv
SERVE_VENV ?= .venv-serve
PORT ?= 50051
METRICS_PORT ?= 9400
MODEL_STORE ?= model_store
# pytest-xdist workers for `make test` (CI has 2 cores); TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
PIP = $(VENV)/bin/pip
PY = $(VENV)/bin/python

.PHONY: install install-serve test lint serve models bench bench-graphs bench-torchserve soak quality fidelity keel-runs proto clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first and pinned: a bare `torch` requirement would pull the CUDA build.
	$(PIP) install -q torch==$(TORCH_VERSION)
	$(PIP) install -q -e '.[train,serve,torchserve,sklearn,dev]'
	touch $@

install: $(VENV)/.installed
	@if [ -x tools/install-test-tools.sh ]; then tools/install-test-tools.sh; fi

$(SERVE_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/pip install -q --upgrade pip
	$(SERVE_VENV)/bin/pip install -q -e '.[serve]'
	touch $@

install-serve: $(SERVE_VENV)/.installed

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy synthserve training serving torchserve_handler

# Two runs: the suite on $(TEST_WORKERS) workers, then the tests that bound latency or measured cost, alone.
test: install lint
	$(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadgroup -m "not slow and not serial"
	$(VENV)/bin/pytest -q -m "serial and not slow"

# Serves the shipped model store on localhost:$(PORT) with a torch-free install.
serve: install-serve
	$(SERVE_VENV)/bin/synthserve serve --model-store $(MODEL_STORE) --port $(PORT) --metrics-port $(METRICS_PORT)

# Retrains the shipped models deterministically (seed 0, CPU).
models: $(VENV)/.installed
	$(PY) -m training.shipped --model-store $(MODEL_STORE)

bench: install
	$(PY) benchmarks/serving.py

# Each exported graph alone on one ONNX Runtime thread: the ceilings under the server.
bench-graphs: $(VENV)/.installed
	$(PY) benchmarks/graphs.py

bench-torchserve: install
	$(PY) benchmarks/torchserve_vs_synthserve.py

soak: install
	$(VENV)/bin/pytest -q -m slow

# The headline quality run: all 100 KEEL data sets, raw5 split, autoregressive family, plain rows and Balance's
# default, anomaly scores against kNN: ~2.5 h on 2 cores (resumable with --resume; docs/quality.md).
quality: $(VENV)/.installed
	$(PY) benchmarks/quality.py --out runs/quality-raw5

# synthserve's families against SDV 2.x (GaussianCopula, TVAE, CTGAN) on 15 tables x 2 written forms: ~1 h on
# 2 cores; makes .venv-sdv on first use (docs/fidelity.md).
fidelity: $(VENV)/.installed
	$(PY) benchmarks/fidelity.py --output runs/fidelity.json

# Every family on all 100 KEEL data sets x 2 folds x integer/float CSVs, 2 epochs: the failed-run count (resumable).
keel-runs: $(VENV)/.installed
	$(PY) benchmarks/keel_runs.py --epochs 2 --onnx-exporter torchscript --jobs 2 --output runs/keel_runs.jsonl

# Regenerates serving/proto/ from protos/ (a test checks the committed code is up to date).
proto: $(VENV)/.installed
	$(PY) -m serving.protogen

clean:
	rm -rf $(VENV) $(SERVE_VENV) .venv-sdv .mypy_cache .ruff_cache .pytest_cache
