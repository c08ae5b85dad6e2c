"""`python -m emotion_triton.commands.serve` run in a subprocess as a user runs it, its output read
line by line, its tritonserver and Python stubs found (and killed if a test leaves them behind)."""

from __future__ import annotations

import contextlib
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from emotion_triton.serving.local_server import SHM_PREFIX
from emotion_triton.serving.preflight import free_ports


def serve_command(repository: Path, *args: str) -> tuple[list[str], list[int]]:
    """The command line of `python -m emotion_triton.commands.serve` on `repository` on three free ports
    (HTTP, gRPC, metrics), and those ports."""
    ports = free_ports(3)
    command = [sys.executable, "-m", "emotion_triton.commands.serve", "--repository", str(repository)]
    command += ["--http-port", str(ports[0]), "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2])]
    return [*command, *args], ports


def running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class ServeProcess:
    """`python -m emotion_triton.commands.serve` in a subprocess (the serve_forever supervision), with its output."""

    def __init__(self, repository: Path, log_file: Path, *args: str):
        command, self.ports = serve_command(repository, "--log-file", str(log_file), *args)
        self.http_url, self.grpc_url = f"127.0.0.1:{self.ports[0]}", f"127.0.0.1:{self.ports[1]}"
        self.metrics_url = f"http://127.0.0.1:{self.ports[2]}/metrics"
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue = queue.Queue()
        self.output: list[str] = []
        self.seen: dict[int, psutil.Process] = {}  # every tritonserver and stub, killed if left behind
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put((time.monotonic(), line))

    def wait_for(self, fragment: str, timeout: float) -> float:
        """When a line containing `fragment` was printed; fails with the output after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                when, line = self.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            self.output.append(line)
            if fragment in line:
                return when
        pytest.fail(f"no line with {fragment!r} within {timeout:g} s:\n{''.join(self.output)}")

    def rest_of_output(self) -> str:
        while not self.lines.empty():
            self.output.append(self.lines.get()[1])
        return "".join(self.output)

    def stubs(self) -> dict[str, psutil.Process]:
        """model name -> its Python backend stub (children of the tritonserver child)."""
        found = {}
        for child in psutil.Process(self.process.pid).children(recursive=True):
            try:
                args = child.cmdline()
                self.seen.setdefault(child.pid, child)
                if args and args[0].endswith("triton_python_backend_stub") and child.status() != psutil.STATUS_ZOMBIE:
                    found[Path(args[1]).parents[1].name] = child
            except psutil.Error:
                continue
        return found

    def shm_regions(self) -> set[str]:
        return {arg for stub in self.stubs().values() for arg in stub.cmdline() if arg.startswith(SHM_PREFIX)}

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for process in self.seen.values():  # nothing may outlive the test (psutil checks it is still the same)
            if running(process):
                with contextlib.suppress(psutil.Error):
                    process.kill()
