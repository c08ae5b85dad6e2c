"""What `pip install` gives a user: declared extras that the lock pins, no placeholder packages, and a
client that installs and classifies without torch or transformers."""

import json
import subprocess
import sys
import venv
from importlib import import_module
from importlib.metadata import PackageNotFoundError, metadata
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .conftest import git, git_checkout, git_status

PROJECT = Path(__file__).resolve().parents[1]
LOCK = PROJECT / "requirements.lock"
PYPROJECT = tomllib.loads((PROJECT / "pyproject.toml").read_text())
SELF = canonicalize_name(PYPROJECT["project"]["name"])
FIND_TORCH = "import importlib.util as u; print([m for m in ('torch', 'transformers') if u.find_spec(m)])"


def locked() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, pinned = line.partition("==")
            pins[canonicalize_name(name)] = pinned
    return pins


def declared() -> list[Requirement]:
    extras = PYPROJECT["project"]["optional-dependencies"]
    requirements = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    requirements += [Requirement(r) for group in extras.values() for r in group]
    return [r for r in requirements if canonicalize_name(r.name) != SELF]


def test_every_declared_dependency_is_pinned_by_the_lock_within_its_range():
    pins = locked()
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is declared in pyproject.toml but not pinned in requirements.lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (requirement, pins[name])
    torch = [r for r in declared() if r.name == "torch"]
    assert torch and all(str(r.specifier) == f"=={pins['torch']}" for r in torch), "torch must be pinned exactly"


def test_the_lock_installs_no_placeholder_package():
    for name in locked():
        try:
            summary = metadata(name)["Summary"] or ""
        except PackageNotFoundError:
            continue  # not installed on this platform
        assert summary.strip().lower() != "placeholder", f"{name} in requirements.lock is an empty placeholder"


def test_console_scripts_name_functions_that_exist():
    for command, target in PYPROJECT["project"]["scripts"].items():
        module, _, function = target.partition(":")
        assert callable(getattr(import_module(module), function)), command


def pip_install(python: Path, requirement: str) -> None:
    """Installs into another venv from the package registries, constrained by the lock."""
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "-c", str(LOCK), requirement],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-3000:]


@pytest.mark.server
def test_the_package_without_extras_is_the_client_and_installs_without_torch(tmp_path, served):
    """A fresh venv with `pip install -c requirements.lock .` (from the package registries, in a clean
    checkout) runs `emotion-classify` against a real tritonserver, and has neither torch nor
    transformers; with the `evaluate` extra added, `emotion-evaluate` measures accuracy, still without
    them. The checkout stays clean: setuptools' build folder is not our build/ folder, and git ignores it."""
    server = served("distilbert")
    source = git_checkout(tmp_path / "checkout")
    environment = tmp_path / "client-venv"
    venv.create(environment, with_pip=True)
    python = environment / "bin" / "python"
    pip_install(python, str(source))
    # Our build/ holds what it held (no build/lib, no build/bdist.*), and the rest git ignores.
    assert (
        sorted(f"build/{path.name}" for path in (source / "build").iterdir())
        == git(source, "ls-files", "build").split()
    )
    assert git_status(source) == []
    missing = subprocess.run([str(python), "-c", FIND_TORCH], capture_output=True, text=True)
    assert missing.stdout.strip() == "[]", missing.stdout
    # The commands of the extras name the extra they need, in one line.
    for command, extra in (("serve", "serve"), ("evaluate", "evaluate"), ("bench", "bench"), ("soak", "serve")):
        refused = subprocess.run(
            [str(environment / "bin" / f"emotion-{command}"), "--help"], capture_output=True, text=True, timeout=60
        )
        assert refused.returncode == 1 and refused.stdout == "", refused
        (line,) = refused.stderr.splitlines()
        assert line.startswith(f"emotion-{command} needs the '{extra}' extra (") and f"[{extra}]" in line, line
    for protocol, url in (("grpc", server.grpc_url), ("http", server.http_url)):
        answer = subprocess.run(
            [str(environment / "bin" / "emotion-classify"), "--protocol", protocol, "--url", url, "--json"]
            + ["--text", "i feel wonderful today", "--text", "this is terrifying"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert answer.returncode == 0, answer.stderr
        predictions = json.loads(answer.stdout)
        assert len(predictions) == 2
        assert all(len(scores) == 6 and abs(sum(s["score"] for s in scores) - 1) < 1e-4 for scores in predictions)

    # The `evaluate` extra on top: accuracy over labelled data, still without torch or transformers.
    pip_install(python, f"{source}[evaluate]")
    assert git_status(source) == []
    labelled = tmp_path / "labelled.txt"
    labelled.write_text("i feel wonderful today;joy\nthis is terrifying;fear\ni am so sad;sadness\n")
    report = subprocess.run(
        [str(environment / "bin" / "emotion-evaluate"), str(labelled), "--url", server.grpc_url, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["answered"] == 3
    missing = subprocess.run([str(python), "-c", FIND_TORCH], capture_output=True, text=True)
    assert missing.stdout.strip() == "[]", missing.stdout


@pytest.mark.parametrize(
    "modules",
    [
        "emotion_triton.client, emotion_triton.client.classify",  # the `client` extra
        "emotion_triton.commands.evaluate, emotion_triton.evaluation.server_accuracy",  # the `evaluate` extra (torch only for --compare-with, imported then)
    ],
)
def test_the_client_layers_import_neither_torch_nor_transformers(modules):
    """What a client-only install can run: checked in this venv, where both are installed."""
    code = (
        f"import sys, {modules}; print(sorted(m for m in ('torch', 'transformers', 'tokenizers') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
