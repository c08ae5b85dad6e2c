"""The README's path, walked on a tiny model: its build command, `make serve`, its classify and evaluate
commands and `make bench`'s checkpoint, in a copy of the project laid out as a user's checkout
(the shared data beside it), with no path written by hand."""

import os
import re
import shlex
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from emotion_triton.serving.preflight import free_port
from tests.helpers.checkout import git_checkout, git_status

PROJECT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.server


def readme_command(pattern: str) -> list[str]:
    """The README's first command line matching `pattern`, without its comment, run with this Python."""
    commands = [line.split("  #")[0].strip() for line in (PROJECT / "README.md").read_text().splitlines()]
    line = next(line for line in commands if re.search(pattern, line) and line.startswith((".venv/bin/", "python ")))
    words = shlex.split(line)
    return [sys.executable, *words[1:]] if words[0].endswith("python") else words


def make_recipe(target: str, **variables) -> list[str]:
    """What `make target` runs (make itself expands the Makefile, its set-up step left out), with this Python."""
    assignments = [f"{name}={value}" for name, value in {**variables, "BIN": Path(sys.executable).parent}.items()]
    printed = subprocess.run(
        ["make", "--no-print-directory", "-n", "-o", "setup", "-C", str(PROJECT), target, *assignments],
        capture_output=True,
        text=True,
        check=True,
    )
    (line,) = printed.stdout.strip().splitlines()
    return shlex.split(line)


@pytest.fixture
def checkout(tmp_path):
    """A clean clone of the project in tmp_path/work/project, with ../shared beside it as on a user's machine."""
    project = git_checkout(tmp_path / "work" / "project")
    (tmp_path / "work" / "shared").symlink_to(PROJECT.parent / "shared")
    return project


def run(command: list[str], cwd: Path, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{shlex.join(command)}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


def test_the_readme_commands_find_each_others_files(checkout, tiny_base):
    env = {**os.environ, "PYTHONPATH": str(checkout / "src")}
    # The build command of the README, on a tiny base model and a few steps: what it writes is found below.
    build = readme_command(r"build/build.py --preset minilm-offline")
    # 4 steps, under one epoch, while the preset averages 3 epochs: said in warnings, not refused.
    run(
        [*build, "--base_model", str(tiny_base("bert")), "--max_steps", "4"],
        checkout,
        env,
    )
    checkpoint = checkout / "runs" / "minilm-offline" / "checkpoint"
    assert (checkpoint / "config.json").is_file()
    # `make bench` benchmarks that checkpoint without being told where it is.
    bench = make_recipe("bench")
    assert "--checkpoint" not in bench
    chosen = "from emotion_lab.perf.benchmark import parse_arguments; print(parse_arguments([])[0].checkpoint)"
    assert run([sys.executable, "-c", chosen], checkout, env).stdout.strip() == str(checkpoint)

    ports = {"HTTP_PORT": str(free_port()), "GRPC_PORT": str(free_port()), "METRICS_PORT": str(free_port())}
    server = subprocess.Popen(
        make_recipe("serve", **ports),
        cwd=checkout,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for line in server.stdout:
            if "Ctrl-C stops it" in line:
                break
        else:
            pytest.fail(f"make serve exited {server.wait()} before serving")
        grpc_url = f"127.0.0.1:{ports['GRPC_PORT']}"
        classify = run([*readme_command(r"client/classify.py --text"), "--url", grpc_url], checkout, env)
        lines = classify.stdout.splitlines()
        assert [line for line in lines if not line.startswith(" ")] == ["i feel wonderful today", "this is terrifying"]
        assert len([line for line in lines if re.match(r"  \w+ +\d+\.\d\d%", line)]) == 2 * 6  # every class, each text
        # The README's evaluation with --compare-with and no path: the build's checkpoint, identical labels.
        evaluate = run([*readme_command(r"client/evaluate.py \S+ --compare-with$"), "--url", grpc_url], checkout, env)
        assert re.search(
            rf"parity with the eager model {re.escape(str(checkpoint))} .*labels agree 100.00%.*: OK", evaluate.stdout
        )
        # The same build while `make serve` serves: a new version, rolled out through the server; then
        # `make rollback` serves the first again. Neither writes a tracked file.
        rebuilt = run([*build, "--base_model", str(tiny_base("bert")), "--max_steps", "4"], checkout, env)
        assert "version 2 serves (was 1)" in rebuilt.stdout + rebuilt.stderr, rebuilt.stdout[-1000:]
        rollback = run(make_recipe("rollback"), checkout, env)
        assert "version 1 serves again (was 2)" in rollback.stdout + rollback.stderr, rollback.stdout[-1000:]
    finally:
        server.terminate()
        server.wait(60)
    assert not _answers(ports["HTTP_PORT"])
    # The build's run folder, the installed models and their reports, the repository's state and derived
    # configs, caches: nothing git shows, and no tracked file changed.
    assert git_status(checkout) == []
    assert subprocess.run(["git", "diff", "--stat"], cwd=checkout, capture_output=True, text=True).stdout == ""


def _answers(port: str) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/live", timeout=2).close()
    except OSError:
        return False
    return True
