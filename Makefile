# genlab: `make help` lists the targets.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.genlab-installed

.DEFAULT_GOAL := help
.PHONY: help install demo test test-all bench bench-quick bench-epochs lint clean

help: ## show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-11s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP) ## create .venv (if missing) and install genlab with its dev extras
	@true

demo: install ## train a GAN on the embedded digits dataset (offline, ~1 min on 2 CPU cores)
	$(PY) -m genlab experiment=demo

# `make test` runs the suite in TEST_WORKERS processes (pytest-xdist), one torch thread each: most of its time is
# single-threaded (interpreter start-up, imports, small nets), so two workers on 2 cores take 7.8 min instead of
# 13 (two workers with 2 threads each: 10.7 min, the cores oversubscribed). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2

test: install ## run the default (offline, CPU) test suite (TEST_WORKERS=2 processes)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist load

test-all: install ## the full suite, slow real-data checks included (GENLAB_DATA_DIR must point at MNIST)
	$(PY) -m pytest -q -m "not gpu"

bench: install ## data path + training speed against plain-PyTorch scripts on MNIST (GENLAB_DATA_DIR, ~15 min): docs/benchmarks.md
	$(PY) -m benchmarks.data_path
	$(PY) -m benchmarks.train_speed $(BENCH_ARGS)

bench-epochs: install ## the DCGAN and the WGAN-GP over two whole epochs against their baselines (~25 min on 2 cores)
	$(PY) -m benchmarks.train_speed --models dcgan wgan_gp --limit-batches --section epochs $(BENCH_ARGS)

bench-quick: install ## one alternation of the training benchmark, printed only (no DDP pair, docs untouched)
	$(PY) -m benchmarks.train_speed --repeats 1 --no-ddp --no-doc $(BENCH_ARGS)

lint: install ## ruff lint and format check
	$(PY) -m ruff check genlab tests benchmarks
	$(PY) -m ruff format --check genlab tests benchmarks

clean: ## remove caches and run outputs (keeps .venv)
	rm -rf .pytest_cache .ruff_cache outputs/* multirun lightning_logs
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
