"""The logic of the Locust load test (`loadtest/locustfile.py`) of the `emotion` ensemble.

The locustfile holds the User classes and the event hooks; everything else is here: the options,
the texts to send (a labelled file, the Hub split, long texts near the truncation limit), one call
timed and checked, the texts-per-second and accuracy statistics, the step-ramp load shape, CPU use of
the load generator and the server, and the pass/fail thresholds.

Nothing here imports locust: importing it monkey-patches the whole process with gevent, which the
test process must not be. The locustfile passes locust's objects in (they are duck-typed here).

Statistics, next to one row per kind of request (`gRPC batch 8`, ...):
- `TEXTS answered texts`: one entry per answered text, so its count is the number of texts and its
  requests/s is texts/s (a batch of 64 counts 64); its response times are the latency each text saw;
- `ACCURACY labelled texts`: one entry per labelled text checked; a wrong label is a failure
  (`wrong label: expected joy, got sadness`), so its failure count is the number of wrong answers and
  its average size is the running accuracy in percent.
Both are logged straight into their stats entries, not through the request event, so the Aggregated
row, the failure ratio and the latency percentiles stay those of real requests.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import data
from ..client import DEFAULT_URLS, ClientError, EmotionClient
from ..repository import PROJECT_ROOT

logger = logging.getLogger("emotion.loadtest")

DEFAULT_DATA = str(data.EMOTION_VALIDATION_FILE)
REQUEST_TYPES = {"grpc": "gRPC", "http": "HTTP"}
TEXTS = ("TEXTS", "answered texts")  # (request type, name) of the texts-per-second entry
ACCURACY = ("ACCURACY", "labelled texts")  # (request type, name) of the accuracy entry
MIN_ACCURACY_SAMPLE = 100  # fewer labelled texts than this: the accuracy threshold is not judged
LONG_WORDS = (0.8, 1.1)  # long texts have this many words per max_length token (tweets: ~1.1 tokens/word)
STEP_SHAPE_GAIN = 0.05  # texts/s must grow by 5 % per step, or the throughput has stopped rising


# -- options --------------------------------------------------------------------------------------
def add_options(parser) -> None:
    """Adds the load test's options to locust's parser: the web UI shows them, `--help` of the locustfile too."""
    group = parser.add_argument_group("emotion ensemble", "Options of the emotion ensemble's load test.")
    settings, limits = Settings(url=""), Thresholds()

    def option(name, default, help, **kwargs):
        kind = kwargs.pop("type", type(default) if default is not None else str)
        shown = f"{help} (default: %(default)s)" if default != "" else help
        action = group.add_argument(name, default=default, type=kind, help=shown, **kwargs)
        action.include_in_web_ui = True  # what LocustArgumentParser.add_argument sets for its own options
        action.is_secret = action.is_required = action.is_multiple = False
        return action

    option("--triton-url", "", "host:port of Triton; empty: --host, else 127.0.0.1:8001 (gRPC) / :8000 (HTTP)")
    option("--protocol", settings.protocol, "tritonclient protocol", choices=["grpc", "http"])
    option("--model", settings.model, "the ensemble's name")
    option("--timeout", settings.timeout, "seconds one request may take")
    option(
        "--data",
        settings.data,
        "labelled texts: a file (text;label .txt, .csv, .jsonl), a directory (its validation split) "
        "or a Hub id and split (dair-ai/emotion:validation)",
    )
    option("--batch-sizes", format_batch_sizes(settings.batch_sizes), "texts per request and their weights")
    option("--long-share", settings.long_share, "share of requests of long texts near the truncation limit")
    option("--accuracy-batch-size", settings.accuracy_batch_size, "texts per request of AccuracyUser")
    option("--wait", settings.wait, "each user waits 0..WAIT s between requests")
    option("--seed", settings.seed, "seed of the texts drawn")
    option("--shape", "steady", "steady: -u users at -r per s for -t; step: a step ramp", choices=["steady", "step"])
    option("--step-users", 2, "step shape: users added per step")
    option("--step-seconds", 30.0, "step shape: seconds per step")
    option("--step-max-users", 16, "step shape: users of the last step")
    option("--knee-latency-factor", 2.0, "step shape: the knee is where p95 exceeds this times the first step's")
    option("--server-pid", settings.server_pid, "tritonserver's pid for its CPU use; 0: found by the port")
    option(
        "--max-failure-ratio", limits.max_failure_ratio, "fail above this share of failed requests (not wrong labels)"
    )
    option("--max-p95-ms", limits.max_p95_ms, "fail above this p95 latency in ms; 0: off")
    option("--min-texts-per-second", limits.min_texts_per_second, "fail below this many texts/s")
    option(
        "--min-accuracy", limits.min_accuracy, f"fail below this accuracy, judged from {MIN_ACCURACY_SAMPLE} texts on"
    )


def format_batch_sizes(sizes: list[tuple[int, float]]) -> str:
    return ",".join(f"{size}:{weight:g}" for size, weight in sizes)


def parse_batch_sizes(spec: str) -> list[tuple[int, float]]:
    """`1:6,8:3,64:1` -> [(1, 6.0), (8, 3.0), (64, 1.0)]; a size without a weight weighs 1."""
    sizes = []
    for part in str(spec).replace(" ", "").split(","):
        if not part:
            continue
        size, _, weight = part.partition(":")
        try:
            size, weight = int(size), float(weight or 1)
        except ValueError:
            raise ValueError(f"--batch-sizes: {part!r} is not size[:weight], e.g. 1:6,8:3,64:1") from None
        if size < 1 or weight < 0:
            raise ValueError(f"--batch-sizes: {part!r} needs a size >= 1 and a weight >= 0")
        sizes.append((size, weight))
    if not sizes or not any(weight for _, weight in sizes):
        raise ValueError(f"--batch-sizes: {spec!r} names no batch size with a weight above 0")
    return sizes


@dataclass
class Settings:
    url: str
    protocol: str = "grpc"
    model: str = "emotion"
    timeout: float = 30.0
    data: str = DEFAULT_DATA
    batch_sizes: list[tuple[int, float]] = field(default_factory=lambda: [(1, 6.0), (8, 3.0), (64, 1.0)])
    long_share: float = 0.1
    accuracy_batch_size: int = 16
    wait: float = 0.0
    seed: int = 0
    server_pid: int = 0

    @classmethod
    def from_options(cls, options, host: str | None = None) -> Settings:
        protocol = options.protocol
        url = options.triton_url or host or DEFAULT_URLS[protocol]
        return cls(
            url=url.split("://", 1)[-1].rstrip("/"),
            protocol=protocol,
            model=options.model,
            timeout=float(options.timeout),
            data=options.data,
            batch_sizes=parse_batch_sizes(options.batch_sizes),
            long_share=min(max(float(options.long_share), 0.0), 1.0),
            accuracy_batch_size=int(options.accuracy_batch_size),
            wait=max(float(options.wait), 0.0),
            seed=int(options.seed),
            server_pid=int(options.server_pid or 0),
        )

    @property
    def request_type(self) -> str:
        return REQUEST_TYPES[self.protocol]

    def client(self) -> EmotionClient:
        """A client of its own for one user: tritonclient's HTTP client is not safe to share.

        No retries: an overloaded server is a failure the load test must count, not hide.
        """
        return EmotionClient(self.url, self.protocol, self.model, timeout=self.timeout, retries=0)


def use_gevent_for_grpc() -> None:
    """Makes grpc use gevent's I/O: without it each gRPC call blocks gevent's loop, so users take turns.

    Must run before the first channel exists (the locustfile calls it at import).
    """
    from grpc.experimental import gevent as grpc_gevent

    grpc_gevent.init_gevent()


# -- what the server serves -----------------------------------------------------------------------
@dataclass
class ServerInfo:
    labels: list[str]
    max_batch_size: int
    max_length: int | None  # the tokenizer's truncation length, when the ensemble names one

    @classmethod
    def fetch(cls, client: EmotionClient) -> ServerInfo:
        """Labels, the largest batch and the truncation length, from the server's model configs."""
        return cls(labels=list(client.labels), max_batch_size=client.max_batch_size, max_length=client.max_length)


def resolve_data(source: str) -> str:
    """A local path as given, else relative to the project; anything else is a Hub id."""
    if os.path.exists(source):
        return source
    in_project = PROJECT_ROOT / source
    if in_project.exists():
        return str(in_project)
    if source.startswith((".", "/", "~")) or Path(source).suffix.lower() in data.SUFFIXES:
        raise FileNotFoundError(f"--data {source}: no such file or directory")
    return source


def load_labelled(source: str) -> data.Split:
    """The labelled texts of --data: a file, a directory's validation split or a Hub split."""
    loaded = data.load(resolve_data(source))
    for name in ("validation", "test", "train"):
        if loaded.splits.get(name) and loaded.splits[name].texts:
            return loaded.splits[name]
    raise ValueError(f"--data {source}: no labelled texts in it")


def long_texts(texts: list[str], max_length: int, count: int, rng: random.Random) -> list[str]:
    """Texts near the truncation limit: some just under `max_length` tokens, some just over."""
    words = [text.split() for text in texts if text.split()]
    made = []
    for _ in range(count):
        target = int(max_length * rng.uniform(*LONG_WORDS))
        out: list[str] = []
        while len(out) < target:
            out.extend(rng.choice(words))
        made.append(" ".join(out[:target]))
    return made


@dataclass
class Workload:
    """The texts to send and how: built once per test start, shared by all users of a process."""

    settings: Settings
    server: ServerInfo
    texts: list[str]
    labels: list[str]
    long: list[str]

    @classmethod
    def build(cls, settings: Settings, server: ServerInfo, split: data.Split) -> Workload:
        unknown = sorted(set(split.labels) - set(server.labels))
        if unknown:
            raise ValueError(f"--data {settings.data}: labels {unknown} are not among the server's {server.labels}")
        too_big = [size for size, _ in settings.batch_sizes if size > server.max_batch_size]
        if too_big or settings.accuracy_batch_size > server.max_batch_size:
            raise ValueError(
                f"batch sizes {too_big or [settings.accuracy_batch_size]} exceed the server's max_batch_size "
                f"{server.max_batch_size}: change --batch-sizes / --accuracy-batch-size"
            )
        rng = random.Random(settings.seed)
        long = long_texts(split.texts, server.max_length or 128, 256, rng) if settings.long_share > 0 else []
        return cls(settings, server, list(split.texts), list(split.labels), long)

    def pick(self, rng: random.Random) -> tuple[str, list[str]]:
        """A request of the task mix: (its statistics name, its texts)."""
        sizes, weights = zip(*self.settings.batch_sizes, strict=True)
        size = rng.choices(sizes, weights)[0]
        if self.long and rng.random() < self.settings.long_share:
            return f"long batch {size}", rng.choices(self.long, k=size)
        return f"batch {size}", rng.choices(self.texts, k=size)

    def labelled(self, start: int) -> tuple[str, list[str], list[str], int]:
        """The accuracy user's next request: labelled texts in file order, from `start`, wrapping."""
        size = self.settings.accuracy_batch_size
        index = [(start + i) % len(self.texts) for i in range(size)]
        texts = [self.texts[i] for i in index]
        return f"accuracy batch {size}", texts, [self.labels[i] for i in index], (start + size) % len(self.texts)


# -- one call -------------------------------------------------------------------------------------
def check_answer(labels: list[str], scores: np.ndarray, count: int, names: list[str]) -> str | None:
    """Why an answer is unusable (wrong shape, unknown label, scores not probabilities), or None."""
    if len(labels) != count or scores.shape != (count, len(names)):
        return f"bad answer: {len(labels)} labels and scores {list(scores.shape)} for {count} texts"
    if any(label not in names for label in labels):
        return f"bad answer: a label not among {names}"
    if not np.all(np.isfinite(scores)) or np.abs(scores.sum(axis=1) - 1).max() > 1e-3:
        return "bad answer: scores are not probabilities"
    given = scores[np.arange(count), [names.index(label) for label in labels]]
    if np.any(given < scores.max(axis=1) - 1e-6):
        return "bad answer: the label is not the highest score"
    return None


def failure_message(error: Exception) -> str:
    """One stable line per kind of failure (so the failures table groups them): `overloaded: ...`."""
    if isinstance(error, ClientError):
        text = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return f"{error.kind}: {text[:160]}"
    return f"error: {type(error).__name__}: {str(error).strip()[:160]}"


def log_texts(stats, texts: list[str], response_time: float) -> None:
    """The texts-per-second entry: one entry per answered text, its size the text's UTF-8 bytes."""
    entry = stats.get(TEXTS[1], TEXTS[0])
    for text in texts:
        entry.log(response_time, len(text.encode("utf-8")))


def log_accuracy(stats, expected: list[str], answered: list[str], response_time: float) -> int:
    """The accuracy entry: a right label logs size 100, a wrong one size 0 and a failure. Returns wrong."""
    from locust.stats import StatsError  # only ever called inside locust

    method, name = ACCURACY
    entry = stats.get(name, method)
    wrong = 0
    for want, got in zip(expected, answered, strict=True):
        entry.log(response_time, 100 if want == got else 0)
        if want != got:
            wrong += 1
            error = f"wrong label: expected {want}, got {got}"
            entry.log_error(error)
            key = StatsError.create_key(method, name, error)
            stats.errors.setdefault(key, StatsError(method, name, error)).occurred()
    return wrong


def call(environment, client: EmotionClient, settings: Settings, server: ServerInfo, name, texts, expected=None):
    """One inference, timed and reported through locust's request event (and the texts/accuracy entries)."""
    payload = sum(len(text.encode("utf-8")) for text in texts)
    start = time.perf_counter()
    error = answered = None
    try:
        answered, scores = client.infer(texts)
        error = check_answer(answered, scores, len(texts), server.labels)
    except Exception as caught:  # every failure is counted and named, never raised into locust
        error = failure_message(caught)
    response_time = (time.perf_counter() - start) * 1000
    environment.events.request.fire(
        request_type=settings.request_type,
        name=name,
        response_time=response_time,
        response_length=payload,
        exception=error,
        context={"texts": len(texts)},
    )
    if error is None:
        log_texts(environment.stats, texts, response_time)
        if expected is not None:
            log_accuracy(environment.stats, expected, answered, response_time)


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


# -- results and thresholds ---------------------------------------------------------------------
@dataclass
class Thresholds:
    max_failure_ratio: float = 0.01
    max_p95_ms: float = 2000.0
    min_texts_per_second: float = 10.0
    min_accuracy: float = 0.85

    @classmethod
    def from_options(cls, options) -> Thresholds:
        return cls(
            float(options.max_failure_ratio),
            float(options.max_p95_ms),
            float(options.min_texts_per_second),
            float(options.min_accuracy),
        )


@dataclass
class Results:
    requests: int
    failures: int
    failures_by_kind: dict[str, int]
    p50_ms: float
    p95_ms: float
    requests_per_second: float
    texts: int
    texts_per_second: float
    checked: int  # labelled texts whose answer was compared with the label
    wrong: int
    exceptions: int = 0  # exceptions in the load test's own code

    @property
    def failure_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0

    @property
    def accuracy(self) -> float | None:
        return (self.checked - self.wrong) / self.checked if self.checked else None

    @classmethod
    def from_stats(cls, stats, exceptions: int = 0) -> Results:
        """From locust's RequestStats: the Aggregated row holds only real requests (see the module doc)."""
        entries = stats.entries
        texts = entries[(TEXTS[1], TEXTS[0])] if (TEXTS[1], TEXTS[0]) in entries else None
        accuracy = entries[(ACCURACY[1], ACCURACY[0])] if (ACCURACY[1], ACCURACY[0]) in entries else None
        kinds: dict[str, int] = {}
        for error in stats.errors.values():
            if error.method in (TEXTS[0], ACCURACY[0]):
                continue
            kind = str(error.error).split(":", 1)[0] if ":" in str(error.error) else "error"
            kinds[kind] = kinds.get(kind, 0) + error.occurrences
        total = stats.total
        return cls(
            requests=total.num_requests,
            failures=total.num_failures,
            failures_by_kind=kinds,
            p50_ms=float(total.get_response_time_percentile(0.5) or 0) if total.num_requests else 0.0,
            p95_ms=float(total.get_response_time_percentile(0.95) or 0) if total.num_requests else 0.0,
            requests_per_second=float(total.total_rps),
            texts=texts.num_requests if texts else 0,
            texts_per_second=float(texts.total_rps) if texts else 0.0,
            checked=accuracy.num_requests if accuracy else 0,
            wrong=accuracy.num_failures if accuracy else 0,
            exceptions=exceptions,
        )

    def summary(self) -> list[str]:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.failures_by_kind.items())) or "none"
        lines = [
            f"requests:    {self.requests} ({self.requests_per_second:.1f}/s), failed {self.failures} "
            f"({self.failure_ratio:.2%}: {kinds}); latency p50 {self.p50_ms:.0f} ms, p95 {self.p95_ms:.0f} ms",
            f"texts:       {self.texts} answered, {self.texts_per_second:.1f} texts/s",
        ]
        if self.accuracy is None:
            lines.append("accuracy:    no labelled text checked (is AccuracyUser running?)")
        else:
            lines.append(
                f"accuracy:    {self.accuracy:.2%} of {self.checked} labelled texts ({self.wrong} wrong labels)"
            )
        return lines

    def crossed(self, limits: Thresholds) -> list[str]:
        """One line per threshold the run crossed; empty when it passes."""
        lines = []
        if self.requests == 0:
            lines.append("no request was sent")
        if self.exceptions:
            lines.append(f"{self.exceptions} exceptions in the load test's own code (see the Exceptions table)")
        if self.requests and self.failure_ratio > limits.max_failure_ratio:
            lines.append(
                f"failure ratio {self.failure_ratio:.2%} is above --max-failure-ratio {limits.max_failure_ratio:g}"
            )
        if self.requests and limits.max_p95_ms > 0 and self.p95_ms > limits.max_p95_ms:
            lines.append(f"p95 latency {self.p95_ms:.0f} ms is above --max-p95-ms {limits.max_p95_ms:g}")
        if self.texts_per_second < limits.min_texts_per_second:
            lines.append(
                f"{self.texts_per_second:.1f} texts/s is below --min-texts-per-second {limits.min_texts_per_second:g}"
            )
        if self.accuracy is not None and self.checked >= MIN_ACCURACY_SAMPLE and self.accuracy < limits.min_accuracy:
            lines.append(f"accuracy {self.accuracy:.2%} is below --min-accuracy {limits.min_accuracy:g}")
        return lines


def report(results: Results, limits: Thresholds, header: str, extra: list[str]) -> tuple[list[str], list[str]]:
    """The final report's lines and the thresholds crossed."""
    crossed = results.crossed(limits)
    lines = [header, *results.summary(), *extra]
    if results.accuracy is not None and results.checked < MIN_ACCURACY_SAMPLE:
        lines.append(f"accuracy not judged: {results.checked} labelled texts (< {MIN_ACCURACY_SAMPLE})")
    lines.append("result:      " + (f"FAIL ({len(crossed)} thresholds crossed)" if crossed else "PASS"))
    lines.extend(f"threshold crossed: {line}" for line in crossed)
    return lines, crossed


def describe(settings: Settings, server: ServerInfo | None) -> str:
    served = f", {len(server.labels)} labels, max_batch_size {server.max_batch_size}" if server else ""
    sizes = format_batch_sizes(settings.batch_sizes)
    return (
        f"emotion load test: {settings.protocol} {settings.url} model {settings.model}{served}; "
        f"batch sizes {sizes}, long share {settings.long_share:g}"
    )


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


def plot_history(history_csv: str | Path, png: str | Path) -> Path:
    """Texts/s and p95 latency against users, from a run with `--csv-full-history` (a step ramp)."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    texts: dict[int, list[float]] = {}
    p95: dict[int, list[float]] = {}
    with open(history_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            users = int(row["User Count"])
            if (row["Type"], row["Name"]) == TEXTS and row["Requests/s"] not in ("", "N/A"):
                texts.setdefault(users, []).append(float(row["Requests/s"]))
            elif row["Name"] == "Aggregated" and row["95%"] not in ("", "N/A") and users:
                p95.setdefault(users, []).append(float(row["95%"]))
    users = sorted(u for u in texts if u)
    fig, throughput = plt.subplots(figsize=(7, 4.5))
    throughput.plot(users, [float(np.median(texts[u])) for u in users], marker="o", color="tab:blue")
    throughput.set_xlabel("Locust users")
    throughput.set_ylabel("texts/s (median of the step)", color="tab:blue")
    latency = throughput.twinx()
    with_latency = [u for u in users if u in p95]
    latency.plot(with_latency, [float(np.median(p95[u])) for u in with_latency], marker="s", color="tab:red")
    latency.set_ylabel("p95 latency, ms (median of the step)", color="tab:red")
    throughput.set_ylim(bottom=0)
    latency.set_ylim(bottom=0)
    throughput.grid(True, alpha=0.3)
    fig.suptitle("emotion ensemble under a Locust step ramp")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return Path(png)
