# The two set-up commands of the README: `make demo` (main job) and `make test`.
# Each creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo pretrain-demo test test-fast lint ui benchmarks gpu-check clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: these builds are the ones provided locally on our machines.
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[sweeps,dev]"
	touch $(STAMP)

install: $(STAMP)

# The main job: a short pretraining on synthetic data, then the demo study.
demo: $(STAMP)
	$(VENV)/bin/vicreg pretrain --config experiments/pretrain_synthetic.yaml
	$(VENV)/bin/vicreg-sweep --study demo

# pytest-xdist: one worker a core, at most 4 (tests/conftest.py gives each its share of torch
# threads); a file's tests that share a costly fixture stay on one worker (xdist_group).
XDIST ?= -n auto --maxprocesses 4 --dist loadgroup

test: $(STAMP)
	bash scripts/ensure_postgres.sh
	$(PY) -m ruff check vicreg sweeps tests benchmarks devtools
	$(PY) -m pytest -q -x -p no:cacheprovider $(XDIST) --durations=15

# The inner loop: everything not marked slow (servers, load, notebooks, kill/resume sweeps).
test-fast: $(STAMP)
	$(PY) -m ruff check vicreg sweeps tests benchmarks devtools
	$(PY) -m pytest -q -x -p no:cacheprovider $(XDIST) -m "not slow" --durations=10

benchmarks: $(STAMP)
	$(PY) benchmarks/throughput.py
	$(PY) benchmarks/cache.py
	$(PY) benchmarks/probe.py
	$(PY) benchmarks/tracking_overhead.py
	$(PY) benchmarks/storage_scaling.py

gpu-check:
	bash benchmarks/gpu_check.sh

ui: $(STAMP)
	@echo "MLflow UI: http://127.0.0.1:5000; each study's runs page:"
	@$(PY) -c "from sweeps.tracking import experiment_links; print(*experiment_links('sqlite:///mlflow.db'), sep='\n')"
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf runs data/.cache
