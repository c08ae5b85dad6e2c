"""What `pip install` gives a user, for real: the package without extras installed from a clean clone
into a fresh venv is the client, classifies against a real server, and has no torch, no transformers
and no lab code."""

import json
import subprocess
import venv
from pathlib import Path

import pytest

from tests.helpers.checkout import git, git_checkout, git_status

PROJECT = Path(__file__).resolve().parents[2]
LOCK = PROJECT / "requirements.lock"
FIND_TORCH = "import importlib.util as u; print([m for m in ('torch', 'transformers') if u.find_spec(m)])"
FIND_LAB = "import importlib.util as u; print(u.find_spec('emotion_lab'))"


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
    # The lab (lab/: the benchmark, the soak, the load test's logic, the containers) is not in it.
    lab = subprocess.run([str(python), "-c", FIND_LAB], capture_output=True, text=True)
    assert lab.stdout.strip() == "None", lab
    assert not any((environment / "bin" / f"emotion-{command}").exists() for command in ("bench", "soak"))
    # The commands of the extras name the extra they need, in one line.
    for command, extra in (("serve", "serve"), ("evaluate", "evaluate")):
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
