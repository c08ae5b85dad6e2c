"""The step-ramp load shape: per-step snapshots, the table of steps, and where the throughput stops rising
(the knee)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .cpu_meter import CpuMeter, CpuSample
from .options import STEP_SHAPE_GAIN, TEXTS


# -- step ramp -----------------------------------------------------------------------------------
@dataclass
class Snapshot:
    time: float
    users: int
    requests: int
    failures: int
    response_times: dict[int, int]
    texts: int
    cpu: CpuSample | None = None

    @classmethod
    def take(cls, stats, users: int, now: float, cpu: CpuSample | None = None) -> Snapshot:
        texts = stats.entries[(TEXTS[1], TEXTS[0])].num_requests if (TEXTS[1], TEXTS[0]) in stats.entries else 0
        total = stats.total
        return cls(now, users, total.num_requests, total.num_failures, dict(total.response_times), texts, cpu)


def percentile(histogram: dict[int, int], share: float) -> float:
    """The response time below which `share` of the requests of a {rounded ms: count} histogram fall."""
    count = sum(histogram.values())
    if count <= 0:
        return 0.0
    rank, seen = share * count, 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= rank:
            return float(value)
    return float(max(histogram))


@dataclass
class Step:
    users: int
    seconds: float
    requests_per_second: float
    texts_per_second: float
    p50: float
    p95: float
    failure_ratio: float
    client_cpu: float | None = None
    server_cpu: float | None = None

    @classmethod
    def between(cls, a: Snapshot, b: Snapshot) -> Step:
        seconds = max(b.time - a.time, 1e-9)
        histogram = {k: v - a.response_times.get(k, 0) for k, v in b.response_times.items()}
        histogram = {k: v for k, v in histogram.items() if v > 0}
        requests = max(b.requests - a.requests, 0)
        client = server = None
        if a.cpu is not None and b.cpu is not None:
            client, server, _ = CpuMeter.used(a.cpu, b.cpu)
        return cls(
            users=a.users,
            seconds=seconds,
            requests_per_second=requests / seconds,
            texts_per_second=max(b.texts - a.texts, 0) / seconds,
            p50=percentile(histogram, 0.5),
            p95=percentile(histogram, 0.95),
            failure_ratio=(b.failures - a.failures) / requests if requests else 0.0,
            client_cpu=client,
            server_cpu=server,
        )


def find_knee(steps: list[Step], latency_factor: float = 2.0, gain: float = STEP_SHAPE_GAIN) -> list[str]:
    """Where latency takes off and where texts/s stops rising, in words."""
    steps = [step for step in steps if step.requests_per_second > 0]
    if len(steps) < 2:
        return ["knee: not enough steps with answered requests to tell"]
    lines = []
    base = steps[0]
    rising = next((s for s in steps[1:] if s.p95 > latency_factor * max(base.p95, 1.0)), None)
    if rising:
        lines.append(
            f"latency knee: p95 {rising.p95:.0f} ms at {rising.users} users, over {latency_factor:g}x the "
            f"{base.p95:.0f} ms at {base.users}"
        )
    else:
        lines.append(f"latency knee: not reached (p95 stayed under {latency_factor:g}x the first step's)")
    best = steps[0]
    plateau = None
    for step in steps[1:]:
        if step.texts_per_second < (1 + gain) * best.texts_per_second and plateau is None:
            plateau = step
        if step.texts_per_second > best.texts_per_second:
            best = step
    peak = f"peak {best.texts_per_second:.1f} texts/s at {best.users} users"
    if plateau:
        lines.append(f"throughput: stops rising (< +{gain:.0%}) at {plateau.users} users; {peak}")
    else:
        lines.append(f"throughput: still rising at the last step; {peak}")
    return lines


def step_table(steps: list[Step]) -> list[str]:
    lines = ["users   req/s  texts/s   p50 ms   p95 ms  fail %  client CPU  server CPU"]
    for s in steps:
        cpu = [f"{c:10.2f}" if c is not None else f"{'-':>10}" for c in (s.client_cpu, s.server_cpu)]
        lines.append(
            f"{s.users:5d} {s.requests_per_second:7.1f} {s.texts_per_second:8.1f} {s.p50:8.0f} {s.p95:8.0f} "
            f"{s.failure_ratio:7.1%}  {cpu[0]}  {cpu[1]}"
        )
    return lines


class ShapeLogic:
    """`tick()` of the load shape; the locustfile mixes it into a `LoadTestShape`.

    `--shape steady`: locust's own -u users at -r per second, for -t (or until stopped).
    `--shape step`: start with --step-users, add as many every --step-seconds up to --step-max-users,
    then stop; each step's request rate, texts/s, p50/p95 latency, failures and CPU use are recorded,
    and the report names the knee (where p95 latency takes off and where texts/s stops rising).
    """

    use_common_options = True  # the steady shape reads -u, -r and -t
    cpu: CpuMeter | None = None  # the running test's meter (the locustfile's subclass gives it), for CPU per step

    def tick(self):
        options = self.runner.environment.parsed_options
        run_time = self.get_run_time()
        if getattr(options, "shape", "steady") != "step":
            limit = getattr(options, "run_time", None)
            if limit and run_time >= limit:
                return None
            return int(options.num_users or 1), float(options.spawn_rate or 1)
        step_users = max(int(options.step_users), 1)
        steps = max(math.ceil(int(options.step_max_users) / step_users), 1)
        index = int(run_time // float(options.step_seconds))
        users = None if index >= steps else min((index + 1) * step_users, int(options.step_max_users))
        self._observe(index, users, run_time)
        return None if users is None else (users, float(step_users))

    def reset_time(self) -> None:
        """At each start of the shape (a web UI may run several tests): a new step record."""
        self._steps, self._step_index, self._step_start = [], None, None
        super().reset_time()

    def _observe(self, index: int, users: int | None, run_time: float) -> None:
        """At each step change, closes the step that ended."""
        if getattr(self, "_step_index", None) == index:
            return
        sample = self.cpu.sample() if self.cpu is not None else None
        now = Snapshot.take(self.runner.stats, users or 0, run_time, sample)
        previous = getattr(self, "_step_start", None)
        if previous is not None:
            if previous.cpu is None and self.cpu is not None:
                previous.cpu = self.cpu.start  # the first step began before the test start made the meter
            self.steps.append(Step.between(previous, now))
        self._step_index, self._step_start = index, (now if users is not None else None)

    @property
    def steps(self) -> list[Step]:
        if not hasattr(self, "_steps"):
            self._steps = []
        return self._steps

    def finish(self) -> None:
        """Closes the step in progress (a run stopped early)."""
        if getattr(self, "_step_start", None) is not None:
            self._observe(-1, None, self.get_run_time())

    def step_report(self, latency_factor: float) -> list[str]:
        if not self.steps:
            return []
        return ["step ramp:", *step_table(self.steps), *find_knee(self.steps, latency_factor)]
