"""What one process of the load test holds between Locust's events."""

from __future__ import annotations

from dataclasses import dataclass, field

from .cpu_meter import CpuMeter, find_server_pid
from .options import Settings
from .workload import ServerInfo, Workload, load_labelled


@dataclass
class Session:
    """What one process of the load test holds between locust's events."""

    settings: Settings | None = None
    server: ServerInfo | None = None
    workload: Workload | None = None
    cpu: CpuMeter | None = None
    error: str | None = None  # why the last test could not start
    report: list[str] = field(default_factory=list)  # the final report, printed last

    def prepare(self, options, host: str | None = None) -> None:
        """At test start: reads the options, the server's config and the data; raises with one clear line."""
        self.error = None
        self.settings = Settings.from_options(options, host)
        with self.settings.client() as client:
            self.server = ServerInfo.fetch(client)
        self.workload = Workload.build(self.settings, self.server, load_labelled(self.settings.data))
        pid = self.settings.server_pid or find_server_pid(self.settings.url)
        self.cpu = CpuMeter(pid)
