# hitl-gateway: every command installs and starts what it needs (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: demo test bench chaos lint typecheck unit integration screenshots image stack-up stack-down stack-status venv clean label-studio-up label-studio-down test-label-studio native native-test native-bench

# The gateway's main job, end to end on the local stack.
demo: $(STAMP) stack-up
	$(BIN)/python loadtest/demo.py

# The whole test suite against the real services (Label Studio included: docs/label-studio.md).
test: $(STAMP) stack-up label-studio-up lint typecheck
	$(BIN)/pytest -q -p no:cacheprovider tests

# Throughput and latency side by side with the bare Kafka client, Quix Streams and Faust
# (docs/performance.md); the peers come from the bench extra.
bench: $(BENCH_STAMP) stack-up
	$(BIN)/python loadtest/bench.py

# The fault matrix: three brokers, three gateways, real faults; results in loadtest/results
# (docs/reliability.md). CHAOS_ARGS narrows it, e.g. CHAOS_ARGS="--scenarios S1,S4 --reps 3".
CHAOS_ARGS ?=
chaos: $(STAMP)
	$(BIN)/python loadtest/chaos.py $(CHAOS_ARGS)

# The reviewer workspace's screenshots in docs/images, made by its browser tests.
screenshots: $(STAMP) stack-up
	HITL_SCREENSHOTS_DIR=docs/images $(BIN)/pytest -q tests/integration/test_workspace_browser.py \
		tests/integration/test_oidc_review.py

# The container image (podman, no registry needed; docs/deploy.md).
image: $(STAMP)
	$(BIN)/python deploy/local/image.py build

# The compiled decode-and-route prototype (native/README.md), built into the venv; needs
# rustc and cargo. Optional: nothing else in the project imports it.
native: $(STAMP)
	$(BIN)/python -m pip install -q 'maturin>=1.7,<2'
	VIRTUAL_ENV=$(abspath $(VENV)) $(BIN)/maturin develop --release -m native/Cargo.toml

# Its property test (it routes exactly like the Python engine) and its benchmark.
native-test: native
	$(BIN)/pytest -q -p no:cacheprovider native/tests

native-bench: native
	$(BIN)/python native/bench.py

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

integration: $(STAMP) stack-up label-studio-up
	$(BIN)/pytest -q tests/integration

lint: $(STAMP)
	$(BIN)/ruff check src tests loadtest deploy/local deploy/grafana native
	$(BIN)/ruff format --check src tests loadtest deploy/local deploy/grafana native

typecheck: $(STAMP)
	$(BIN)/mypy

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	touch $(BENCH_STAMP)

stack-up: $(STAMP)
	$(BIN)/python deploy/local/stack.py up

stack-down: $(STAMP)
	$(BIN)/python deploy/local/stack.py down

stack-status: $(STAMP)
	$(BIN)/python deploy/local/stack.py status

# A real Label Studio for the bridge (its own virtualenv under .cache; docs/local-stack.md).
label-studio-up: $(STAMP)
	$(BIN)/python deploy/local/labelstudio.py up

label-studio-down: $(STAMP)
	$(BIN)/python deploy/local/labelstudio.py down

# The Label Studio bridge's round trip on its own (make test runs it too).
test-label-studio: $(STAMP) stack-up label-studio-up
	$(BIN)/pytest -q -p no:cacheprovider tests/integration/test_label_studio_bridge.py

clean: stack-down label-studio-down
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache .hypothesis
