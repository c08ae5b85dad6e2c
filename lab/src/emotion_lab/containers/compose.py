"""A compose project driven through `docker compose`: the files, the project name and the environment
that interpolates them, and what tests and tools ask of its services (state, health, exit code)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from emotion_triton.errors import EmotionTritonError


class ComposeError(EmotionTritonError, RuntimeError):
    """A `docker compose` command failed: the command and the end of its output."""


@dataclass
class ComposeProject:
    directory: Path  # where the compose files are (the project's checkout)
    files: tuple[str, ...] = ("docker-compose.yml",)
    name: str = "emotion-triton"
    env: dict[str, str] = field(default_factory=dict)  # interpolation variables (HTTP_PORT, BUILD_*, ...)

    def command(self, *args: str) -> list[str]:
        files = [option for path in self.files for option in ("-f", str(path))]
        return ["docker", "compose", "--project-directory", str(self.directory), "-p", self.name, *files, *args]

    def run(self, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
        result = subprocess.run(
            self.command(*args),
            cwd=self.directory,
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
            raise ComposeError(f"`docker compose {' '.join(args)}` exited {result.returncode}: {' | '.join(tail)}")
        return result

    def container(self, service: str) -> str:
        """The id of the service's container (running or not); ComposeError when it has none."""
        ids = self.run("ps", "--all", "--quiet", service).stdout.split()
        if not ids:
            raise ComposeError(f"service {service} has no container")
        return ids[0]

    def inspect(self, service: str) -> dict:
        output = subprocess.run(["docker", "inspect", self.container(service)], capture_output=True, text=True)
        return json.loads(output.stdout)[0]

    def health(self, service: str) -> str:
        """starting, healthy or unhealthy; or the container's state when it is not running (exited, ...)."""
        state = self.inspect(service)["State"]
        if state["Status"] != "running":
            return state["Status"]
        return state.get("Health", {}).get("Status", "running")

    def wait_for_health(self, service: str, wanted: str, timeout: float) -> float:
        """Seconds until the service's health is `wanted`; ComposeError on timeout or an exited container."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            state = self.health(service)
            if state == wanted:
                return time.monotonic() - started
            if state in ("exited", "dead") and wanted not in ("exited", "dead"):
                logs = self.run("logs", "--tail=20", service, check=False).stdout.strip().splitlines()[-5:]
                raise ComposeError(f"{service} is {state} while waiting for {wanted}: {' | '.join(logs)}")
            time.sleep(0.5)
        raise ComposeError(f"{service} still {self.health(service)} after {timeout:.0f} s (waiting for {wanted})")

    def exec(self, service: str, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run("exec", "-T", service, *command, check=check, timeout=120)

    def down(self) -> None:
        """Removes every container of the project, the profiles' included, its networks and volumes."""
        self.run("--profile", "*", "down", "--volumes", "--remove-orphans", "--timeout=60", check=False, timeout=300)
