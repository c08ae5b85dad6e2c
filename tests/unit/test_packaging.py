"""What `pip install` gives a user: declared extras that the lock pins, no placeholder packages, and a
client that installs and classifies without torch or transformers."""

import subprocess
import sys
from importlib import import_module
from importlib.metadata import PackageNotFoundError, metadata
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PROJECT = Path(__file__).resolve().parents[2]
LOCK = PROJECT / "requirements.lock"
PYPROJECT = tomllib.loads((PROJECT / "pyproject.toml").read_text())
# The lab beside the package (lab/): its own distribution, never in the package's wheel.
LAB_PYPROJECT = tomllib.loads((PROJECT / "lab" / "pyproject.toml").read_text())
SELF = canonicalize_name(PYPROJECT["project"]["name"])


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
    requirements += [Requirement(r) for r in LAB_PYPROJECT["project"]["dependencies"]]
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
    scripts = PYPROJECT["project"]["scripts"] | LAB_PYPROJECT["project"]["scripts"]
    assert {"emotion-bench", "emotion-soak"} <= set(LAB_PYPROJECT["project"]["scripts"])
    assert not {"emotion-bench", "emotion-soak"} & set(PYPROJECT["project"]["scripts"]), "the lab's, not the package's"
    for command, target in scripts.items():
        module, _, function = target.partition(":")
        assert callable(getattr(import_module(module), function)), command


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
