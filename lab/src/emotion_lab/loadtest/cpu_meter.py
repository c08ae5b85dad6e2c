"""CPU use of the load generator and of the server's process tree during the test."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass


# -- CPU use of the load generator and the server -----------------------------------------------
def _tree_cpu(pid: int) -> tuple[float, int]:
    """CPU seconds of a process and its descendants, ended ones it has reaped included; and how many run.

    Summed over the tree, so a child that ends between two samples (a `--processes` worker) moves from
    its own line to its parent's `children_*` times and is still counted.
    """
    import psutil

    root = psutil.Process(pid)
    seconds, running = 0.0, 0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.Error:  # ended while being read
            continue
        seconds += times.user + times.system + times.children_user + times.children_system
        running += 1
    return seconds, running


def find_server_pid(url: str) -> int | None:
    """The pid of the local tritonserver behind `url`: the process listening on its port, else the only one."""
    import psutil

    host, _, port = url.rpartition(":")
    if host.strip("[]") not in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "") and host not in {
        address.address for addresses in psutil.net_if_addrs().values() for address in addresses
    }:
        return None
    try:
        for connection in psutil.net_connections(kind="tcp"):
            if connection.status == psutil.CONN_LISTEN and connection.laddr and str(connection.laddr.port) == port:
                if connection.pid and "tritonserver" in psutil.Process(connection.pid).name():
                    return connection.pid
    except (psutil.Error, OSError):
        pass
    found = []
    for process in psutil.process_iter(["pid", "name"]):
        if process.info["name"] == "tritonserver":
            found.append(process.info["pid"])
    return found[0] if len(found) == 1 else None


@dataclass
class CpuSample:
    time: float
    client: float  # CPU seconds so far
    server: float | None
    machine_busy: float
    client_processes: int = 1


def _busy_seconds() -> float:
    import psutil

    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0) - getattr(times, "guest", 0.0)


class CpuMeter:
    """CPU use of this process (with its children: `--processes` workers) and of the server, between samples."""

    def __init__(self, server_pid: int | None):
        self.client_pid = os.getpid()
        self.server_pid = server_pid
        self.cores = os.cpu_count() or 1
        self.start = self.sample()

    def sample(self) -> CpuSample:
        server = None
        if self.server_pid:
            try:
                server = _tree_cpu(self.server_pid)[0]
            except Exception:  # gone, or not ours to read
                server = None
        client, processes = _tree_cpu(self.client_pid)
        return CpuSample(time.monotonic(), client, server, _busy_seconds(), processes)

    @staticmethod
    def used(before: CpuSample, after: CpuSample) -> tuple[float, float | None, float]:
        """Cores used on average between two samples: (client, server or None, whole machine)."""
        wall = max(after.time - before.time, 1e-9)
        server = None
        if before.server is not None and after.server is not None:
            server = (after.server - before.server) / wall
        return (after.client - before.client) / wall, server, (after.machine_busy - before.machine_busy) / wall

    def report(self, end: CpuSample | None = None) -> list[str]:
        end = end or self.sample()
        client, server, machine = self.used(self.start, end)
        cores = self.cores
        lines = [f"CPU client:  {client:.2f} cores ({client / cores:.0%} of {cores}): locust, pid {self.client_pid}"]
        if server is None:
            lines.append("CPU server:  unknown (not a local tritonserver; pass --server-pid)")
        else:
            lines.append(
                f"CPU server:  {server:.2f} cores ({server / cores:.0%} of {cores}): tritonserver pid {self.server_pid} "
                "and its backend stubs"
            )
        other = machine - client - (server or 0.0)
        lines.append(f"CPU machine: {machine:.2f} cores busy ({machine / cores:.0%}); other processes {other:.2f}")
        processes = max(self.start.client_processes, end.client_processes)  # locust uses one core per process
        if client > 0.8 * processes:
            lines.append(
                f"warning: the load generator used {client:.2f} cores in {processes} process(es), near its limit: "
                "its numbers are a lower bound (try --processes)"
            )
        return lines
