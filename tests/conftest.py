"""Fixtures shared by every kind of test: the data, tiny models built by the tests, model repositories,
real tritonservers; and the session's checks (each test's kind, the checkout left clean).

The kinds are folders: tests/unit (no model, no server: `make test-unit`, under a minute),
tests/integration (tiny models built on the fly, real tritonservers) and tests/deployment (images,
compose, Kubernetes, the healthcheck, the containers). Helpers shared by test modules are plain modules
in tests/helpers/ (a test module never imports another one, nor a conftest)."""

from __future__ import annotations

from pathlib import Path

import pytest

from emotion_triton.build.pipeline import BuildOptions, build
from emotion_triton.build.training import training_arguments
from emotion_triton.data import EMOTION_DATA_DIR, read_file
from emotion_triton.serving.local_server import DEFAULT_CLASSIFIER, LocalServer
from tests.helpers.checkout import PROJECT, git_status
from tests.helpers.servers import copy_repository, start_server
from tests.helpers.tiny_models import make_tiny_base

EMOTION_DATA = EMOTION_DATA_DIR


# A test that needs a model (a tiny random one, built and exported) or a running tritonserver is an
# integration test (marker `integration`), as is every test of tests/integration/; one in tests/unit/
# is refused: the unit tests need neither (`make test-unit` runs them alone, in seconds).
MODEL_FIXTURES = {"tiny_base", "built_repository", "served"}
TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items):
    for item in items:
        kind = item.path.relative_to(TESTS).parts[0]
        needs_a_model = MODEL_FIXTURES & set(getattr(item, "fixturenames", ())) or item.get_closest_marker("server")
        if needs_a_model and kind == "unit":
            raise pytest.UsageError(f"{item.nodeid} needs a model or a server: its place is tests/integration/")
        if needs_a_model or kind == "integration":
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def emotion_data() -> Path:
    if not (EMOTION_DATA / "validation.txt").exists():
        pytest.fail(f"the emotion data set is expected in {EMOTION_DATA}")
    return EMOTION_DATA


@pytest.fixture(scope="session")
def validation_texts(emotion_data) -> list[str]:
    return read_file(emotion_data / "validation.txt").texts


@pytest.fixture(scope="session")
def small_data(tmp_path_factory, emotion_data) -> Path:
    """A few hundred rows of the real splits, in the local `text;label` layout."""
    directory = tmp_path_factory.mktemp("small-data")
    for name, rows in (("train", 600), ("validation", 200)):
        lines = (emotion_data / f"{name}.txt").read_text(encoding="utf-8").splitlines()[:rows]
        (directory / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory, emotion_data):
    """make(family) -> directory of a tiny randomly initialised pretrained model of that family."""
    texts = read_file(emotion_data / "train.txt").texts[:3000]
    made = {}

    def make(family: str) -> Path:
        if family not in made:
            made[family] = make_tiny_base(family, texts, tmp_path_factory.mktemp(f"tiny-{family}"))
        return made[family]

    return make


@pytest.fixture(scope="session")
def built_repository(tmp_path_factory, tiny_base, small_data):
    """built(family) -> (repository, fine-tuned checkpoint dir) of a tiny model trained for a few steps."""
    built = {}

    def make(family: str) -> tuple[Path, Path]:
        if family not in built:
            root = tmp_path_factory.mktemp(f"built-{family}")
            repository = copy_repository(root / "model_repository")
            # The GPU file in fp32: its half-precision gate has tests of its own (test_half_precision.py).
            options = BuildOptions(
                base_model=str(tiny_base(family)), data=str(small_data), repository=repository, gpu_precision="fp32"
            )
            recipe = {"max_steps": 4, "per_device_train_batch_size": 16, "learning_rate": 1e-3, "num_train_epochs": 1}
            build(options, training_arguments(root / "run", **recipe))
            built[family] = (repository, root / "run" / "checkpoint")
        return built[family]

    return make


@pytest.fixture(scope="session")
def served(built_repository, tmp_path_factory):
    """serve(family, classifier) -> a running LocalServer of that family's tiny model with that
    classifier variant (one per family and variant per session)."""
    servers = {}

    def serve(family: str, classifier: str = DEFAULT_CLASSIFIER) -> LocalServer:
        if (family, classifier) not in servers:
            repository, _ = built_repository(family)
            folder = tmp_path_factory.mktemp(f"server-{family}-{classifier}")
            servers[family, classifier] = start_server(repository, folder, classifier=classifier)
        return servers[family, classifier]

    yield serve
    for server in servers.values():
        server.stop()


# `make test` leaves the checkout as it found it: whatever a test writes into the project (a build
# output not ignored, setuptools' build folder, a stray log) fails the run.
def pytest_sessionstart(session):
    session.config.git_status_before = set(git_status(PROJECT)) if (PROJECT / ".git").exists() else None


def pytest_sessionfinish(session, exitstatus):
    before = getattr(session.config, "git_status_before", None)
    if before is None or getattr(session.config.option, "collectonly", False):
        return
    left = sorted(set(git_status(PROJECT)) - before)
    if left:
        print(f"\nthe tests left files in the checkout ({PROJECT}), which git status shows:\n" + "\n".join(left))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
