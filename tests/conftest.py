"""Shared fixtures: tiny models built by the tests, model repositories, real tritonservers."""

from __future__ import annotations

from pathlib import Path

import pytest

from emotion_triton.build.pipeline import BuildOptions, build
from emotion_triton.build.training import training_arguments
from emotion_triton.containers.cpu_host import git, working_tree_copy
from emotion_triton.data import EMOTION_DATA_DIR, read_file
from emotion_triton.repository import CLASSIFIER_CONFIGS, copy_sources
from emotion_triton.serving.local_server import DEFAULT_CLASSIFIER, LocalServer, ServerOptions

from .tiny_models import make_tiny_base

PROJECT = Path(__file__).resolve().parents[1]

# Every classifier variant a CPU host serves: the production libtorch config and the Python backend.
CLASSIFIERS = tuple(CLASSIFIER_CONFIGS)
EMOTION_DATA = EMOTION_DATA_DIR


# A test that needs a model (a tiny random one, built and exported) or a running tritonserver is an
# integration test; the rest are unit tests (seconds in all): `make test-unit` runs only those.
MODEL_FIXTURES = {"tiny_base", "built_repository", "served"}


def pytest_collection_modifyitems(items):
    for item in items:
        if MODEL_FIXTURES & set(getattr(item, "fixturenames", ())) or item.get_closest_marker("server"):
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


def copy_repository(target: Path) -> Path:
    """The project's model repository (configs and model.py files only) in a temporary folder."""
    return copy_sources(target)


@pytest.fixture(scope="session")
def built_repository(tmp_path_factory, tiny_base, small_data):
    """built(family) -> (repository, fine-tuned checkpoint dir) of a tiny model trained for a few steps."""
    built = {}

    def make(family: str) -> tuple[Path, Path]:
        if family not in built:
            root = tmp_path_factory.mktemp(f"built-{family}")
            repository = copy_repository(root / "model_repository")
            options = BuildOptions(base_model=str(tiny_base(family)), data=str(small_data), repository=repository)
            recipe = {"max_steps": 4, "per_device_train_batch_size": 16, "learning_rate": 1e-3, "num_train_epochs": 1}
            build(options, training_arguments(root / "run", **recipe))
            built[family] = (repository, root / "run" / "checkpoint")
        return built[family]

    return make


def start_server(repository: Path, tmp_path: Path, **kwargs) -> LocalServer:
    options = ServerOptions.on_free_ports(
        repository=repository,
        log_file=tmp_path / "tritonserver.log",
        **kwargs,
    )
    server = LocalServer(options)
    server.start()
    return server


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


def git_status(folder: Path) -> list[str]:
    """What `git status` shows in `folder`: every untracked or changed file, one per line (ignored ones not)."""
    return git(folder, "status", "--porcelain", "--untracked-files=all").splitlines()


def git_checkout(target: Path) -> Path:
    """A clean clone of the project's working tree in `target` (containers.cpu_host.working_tree_copy)."""
    return working_tree_copy(PROJECT, target)


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
