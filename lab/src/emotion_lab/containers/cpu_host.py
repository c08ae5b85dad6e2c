"""The CPU-host deployment of a checkout (docs/deploy.md): docker-compose.yml with docker-compose.cpu.yml,
its ports on 127.0.0.1, the `build` service exporting a fine-tuned checkpoint from a host folder.
The container tests and the benchmark's container phase run it in a copy of the checkout."""

from __future__ import annotations

import resource
import secrets
import shutil
import subprocess
from pathlib import Path

import yaml

from .compose import ComposeProject

CPU_HOST_FILES = ("docker-compose.yml", "docker-compose.cpu.yml")
PORTS = ("HTTP_PORT", "GRPC_PORT", "METRICS_PORT", "PROMETHEUS_PORT")


def git(folder: Path, *arguments: str) -> str:
    command = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid", "-C", str(folder), *arguments]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def working_tree_copy(project: Path, target: Path) -> Path:
    """A clean clone of `project`'s working tree in `target`: its tracked files (and new ones not
    ignored) as they are on disk, committed, so that `git status` there shows what a run leaves behind."""
    files = git(project, "ls-files", "--cached", "--others", "--exclude-standard", "-z").split("\0")
    for name in filter(None, files):
        if (project / name).is_file():  # not a file deleted in the working tree
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(project / name, target / name)
    git(target, "init", "--quiet")
    git(target, "add", "--all")
    git(target, "commit", "--quiet", "--message", "checkout")
    return target


def memlock_override(directory: Path) -> Path | None:
    """On a host whose hard memlock limit is finite (this kind of machine), `ulimits: memlock: -1` fails
    with "error setting rlimit type 8: operation not permitted": an override lowers it to the host's
    hard limit. The production files stay as they are (docs/deploy.md)."""
    hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]
    if hard == resource.RLIM_INFINITY:
        return None
    override = directory / "docker-compose.memlock.yml"
    limit = {"ulimits": {"memlock": hard}}
    override.write_text(yaml.safe_dump({"services": {"build": limit, "tritonserver": limit}}))
    return override


class CpuHostDeployment:
    """The CPU-host deployment of the checkout in `checkout`, published on 127.0.0.1 at `ports`
    ({name: port} for each of PORTS), its build service exporting the checkpoint in `checkpoint`."""

    def __init__(self, checkout: Path, checkpoint: Path, name: str, ports: dict[str, int]):
        self.checkout = checkout
        self.ports = ports
        self.admin_key = secrets.token_urlsafe(18)
        override = memlock_override(checkout)
        env = {name: f"127.0.0.1:{port}" for name, port in ports.items() if name != "PROMETHEUS_PORT"}
        env |= {"PROMETHEUS_PORT": str(ports["PROMETHEUS_PORT"]), "BUILD_CHECKPOINT_DIR": str(checkpoint)}
        env |= {"TRITON_ADMIN_KEY": self.admin_key}
        files = CPU_HOST_FILES + ((override.name,) if override else ())
        self.compose = ComposeProject(checkout, files, name, env)

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.ports['GRPC_PORT']}"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.ports['HTTP_PORT']}"

    def up(self, timeout: float = 900) -> None:
        """The README's CPU-host command: builds the images (docker's layer cache: seconds when nothing
        changed), runs the build service's export, then starts tritonserver and waits until it is healthy."""
        self.compose.run("build", timeout=1500)
        self.compose.run("up", "-d", "tritonserver", timeout=timeout)
        self.healthy()

    def healthy(self, timeout: float = 300) -> float:
        return self.compose.wait_for_health("tritonserver", "healthy", timeout)

    def serving(self) -> None:
        """Healthy again after an earlier run that failed half-way (restarted when it is not)."""
        if self.compose.health("tritonserver") != "healthy":
            self.compose.run("restart", "tritonserver")
            self.healthy()
