# hitl-gateway: every command installs and starts what it needs (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench chaos lint typecheck unit integration screenshots image stack-up stack-down stack-status venv clean

# The gateway's main job, end to end on the local stack.
demo: $(STAMP) stack-up
	$(BIN)/python loadtest/demo.py

# The whole test suite against the real services.
test: $(STAMP) stack-up lint typecheck
	$(BIN)/pytest -q -p no:cacheprovider tests

# Throughput and latency side by side with the bare Kafka client (docs/performance.md).
bench: $(STAMP) stack-up
	$(BIN)/python loadtest/bench.py

# The fault matrix: three brokers, three gateways, real faults; results in loadtest/results
# (docs/reliability.md). CHAOS_ARGS narrows it, e.g. CHAOS_ARGS="--scenarios S1,S4 --reps 3".
CHAOS_ARGS ?=
chaos: $(STAMP)
	$(BIN)/python loadtest/chaos.py $(CHAOS_ARGS)

# The reviewer workspace's screenshots in docs/images, made by its browser tests.
screenshots: $(STAMP) stack-up
	HITL_SCREENSHOTS_DIR=docs/images $(BIN)/pytest -q tests/integration/test_workspace_browser.py

# The container image (podman, no registry needed; docs/deploy.md).
image: $(STAMP)
	$(BIN)/python deploy/local/image.py build

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

integration: $(STAMP) stack-up
	$(BIN)/pytest -q tests/integration

lint: $(STAMP)
	$(BIN)/ruff check src tests loadtest deploy/local deploy/grafana
	$(BIN)/ruff format --check src tests loadtest deploy/local deploy/grafana

typecheck: $(STAMP)
	$(BIN)/mypy

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

stack-up: $(STAMP)
	$(BIN)/python deploy/local/stack.py up

stack-down: $(STAMP)
	$(BIN)/python deploy/local/stack.py down

stack-status: $(STAMP)
	$(BIN)/python deploy/local/stack.py status

clean: stack-down
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache .hypothesis
