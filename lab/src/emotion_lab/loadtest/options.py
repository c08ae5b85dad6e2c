"""The load test's Locust options (`--batch-sizes`, the step ramp, the thresholds), the server's URL
(Locust's own `--host`), and the Settings they make."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from emotion_triton import data
from emotion_triton.client import DEFAULT_URLS, EmotionClient

DEFAULT_DATA = str(data.EMOTION_VALIDATION_FILE)
REQUEST_TYPES = {"grpc": "gRPC", "http": "HTTP"}
# Locust's Host names the server to test, its scheme the protocol: the default is the local server's gRPC port.
DEFAULT_HOST = f"grpc://{DEFAULT_URLS['grpc']}"
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
    # The server is Locust's own --host (and the web page's Host field): grpc://HOST:PORT or http://HOST:PORT.

    def option(name, default, help, **kwargs):
        kind = kwargs.pop("type", type(default) if default is not None else str)
        shown = f"{help} (default: %(default)s)" if default != "" else help
        action = group.add_argument(name, default=default, type=kind, help=shown, **kwargs)
        action.include_in_web_ui = True  # what LocustArgumentParser.add_argument sets for its own options
        action.is_secret = action.is_required = action.is_multiple = False
        return action

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
        """The settings of a run against `host` (Locust's Host: `--host` or the web page's field)."""
        protocol, url = parse_host(host or DEFAULT_HOST)
        return cls(
            url=url,
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


def parse_host(host: str) -> tuple[str, str]:
    """`grpc://127.0.0.1:8001` -> ("grpc", "127.0.0.1:8001"): Locust's Host is a URL whose scheme is the protocol."""
    parts = urlsplit(host.strip())
    if parts.scheme not in REQUEST_TYPES or not parts.netloc or parts.path.strip("/"):
        http, grpc = DEFAULT_URLS["http"], DEFAULT_URLS["grpc"]
        raise ValueError(
            f"host {host!r}: give Triton's address as a URL whose scheme is the protocol, "
            f"grpc://{grpc} or http://{http}"
        )
    return parts.scheme, parts.netloc


def use_gevent_for_grpc() -> None:
    """Makes grpc use gevent's I/O: without it each gRPC call blocks gevent's loop, so users take turns.

    Must run before the first channel exists (the locustfile calls it at import).
    """
    from grpc.experimental import gevent as grpc_gevent

    grpc_gevent.init_gevent()


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
