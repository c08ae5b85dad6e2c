"""The local server: the real `tritonserver` of the nvidia-pytriton wheel, on the CPU, on loopback.

    python -m emotion_triton.server [--http-port 8000] [--grpc-port 8001] [--metrics-port 8002]

It checks what it needs first (libpython, free ports, a built and loadable
model, Triton's PyTorch backend), starts tritonserver with the CPU configuration of
the classifier (`--classifier libtorch`: the production config.pbtxt on CPU
instances, `--model-config-name=cpu`; `--classifier python`: the same model.pt in
a Python-backend model, `--model-config-name=python`; `--classifier onnx`, the default:
model.onnx of the same checkpoint on ONNX Runtime in a Python-backend model,
`--model-config-name=onnx`),
waits until the ensemble answers a real inference, and then keeps checking
that it does (an inference canary every `--canary-interval` seconds: Triton
2.51 keeps reporting "ready" when a Python-backend stub has died).
`--canary-failures` failed canaries in a row, or tritonserver exiting, restart
tritonserver; more than `--max-restarts` restarts within ten minutes end the
process with exit code 1. SIGINT and SIGTERM stop it cleanly: tritonserver
stops taking new requests at once and finishes those in flight within
`--exit-timeout`.
"""

from __future__ import annotations

import argparse
import ctypes.util
import http.client
import json
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import psutil

from ..repository import CLASSIFIER_CONFIGS, DEFAULT_ENSEMBLE, DEFAULT_REPOSITORY, Ensemble
from .pytorch_backend import BackendBuildError, ensure_backend, torch_dir

OFFLINE_BUILD_COMMAND = "python build/build.py --preset minilm-offline"
RESTRICTED_APIS = "shared-memory,model-repository,logging,trace"
logger = logging.getLogger(__name__)
ADMIN_HEADER = "admin-key"
CANARY_TEXT = "i feel fine today"
OVERLOADED = (429, 503)  # queue full or queue timeout: the server answered, it is busy, not broken
SHM_DIR = Path("/dev/shm")
SHM_PREFIX = "triton_python_backend_shm_region_"  # the Python backend's regions, one per stub
RESTART_GRACE = 5.0  # seconds a broken tritonserver gets to stop before SIGKILL when it is restarted
# The classifier variant `make serve` runs: the fastest in `make bench` on 2 cores (docs/performance.md):
# model.onnx on ONNX Runtime led at every concurrency, fp32 and int8 (1.5x the Python variant's texts/s at one client).
DEFAULT_CLASSIFIER = "onnx"


def common_flags(exit_timeout: int, admin_key: str) -> list[str]:
    """The tritonserver flags of every deployment: this local server, docker-compose.yml and deploy/k8s.

    Model control mode `none` (no repository polling, no load/unload API), strict readiness, the exit
    timeout and the APIs restricted to the `admin-key` header; addresses, ports, the repository and the
    model configuration differ per deployment (tests/test_deploy.py compares them).
    """
    restricted = f"{RESTRICTED_APIS}:{ADMIN_HEADER}={admin_key}"
    return [
        "--model-control-mode=none",
        "--strict-readiness=true",
        f"--exit-timeout-secs={exit_timeout}",
        f"--http-restricted-api={restricted}",
        f"--grpc-restricted-protocol={restricted}",
    ]


class MemoryUsage(NamedTuple):
    rss: int  # bytes resident in tritonserver and its Python stubs
    shm: int  # bytes of the stubs' shared-memory regions in /dev/shm


class ServerError(RuntimeError):
    """A one-line cause and fix for why the server cannot start or keep serving."""


@dataclass
class ServerOptions:
    repository: Path = DEFAULT_REPOSITORY
    ensemble: str = DEFAULT_ENSEMBLE
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    classifier: str = DEFAULT_CLASSIFIER  # a key of CLASSIFIER_CONFIGS
    exit_timeout: int = 30  # seconds tritonserver gives requests in flight on shutdown
    ready_timeout: float = 180.0
    admin_key: str = field(default_factory=lambda: os.environ.get("TRITON_ADMIN_KEY") or secrets.token_urlsafe(24))
    log_file: Path | None = None  # default: a file in the system's temp folder
    extra_args: tuple[str, ...] = ()


def pytriton_dir() -> Path:
    try:
        import pytriton
    except ImportError as error:
        raise ServerError("the nvidia-pytriton wheel is not installed: run `make setup`") from error
    return Path(pytriton.__file__).parent / "tritonserver"


def backend_directory(cache: Path, pytorch: bool) -> Path:
    """A backend folder: the wheel's Python backend and this Python's stub, and with `pytorch`
    Triton's PyTorch backend built for this torch, all as symlinks.

    The stub finds its bundled libraries relative to its real path, so copies would not run.
    The PyTorch backend finds libtritonserver.so next to itself (its RUNPATH is $ORIGIN): the
    wheel renamed that library, so a link under the original name points at the copy the
    server has loaded.
    """
    root = pytriton_dir()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    files = {
        "libtriton_python.so": root / "backends" / "python" / "libtriton_python.so",
        "triton_python_backend_utils.py": root / "backends" / "python" / "triton_python_backend_utils.py",
        "triton_python_backend_stub": root / "python_backend_stubs" / version / "triton_python_backend_stub",
    }
    target = cache / "backends" / "python"
    target.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        if not source.exists():
            raise ServerError(f"{source} is missing: nvidia-pytriton has no Python backend for Python {version}")
        _link(target / name, source)
    if pytorch:
        try:
            library = ensure_backend()
        except BackendBuildError as error:
            raise ServerError(f"{error}; or serve the Python-backend classifier: --classifier python") from error
        server_library = next(root.parent.parent.glob("nvidia_pytriton.libs/libtritonserver-*.so"), None)
        if server_library is None:
            raise ServerError("nvidia-pytriton ships no libtritonserver: reinstall it with `make setup`")
        target = cache / "backends" / "pytorch"
        target.mkdir(parents=True, exist_ok=True)
        _link(target / "libtriton_pytorch.so", library)
        _link(target / "libtritonserver.so", server_library)
    return cache / "backends"


def _link(link: Path, source: Path) -> None:
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(source)


def check_libpython() -> None:
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    if (
        ctypes.util.find_library(f"python{version}") is None
        and not (Path(sysconfig.get_config_var("LIBDIR") or "/nonexistent") / f"libpython{version}.so.1.0").exists()
    ):
        raise ServerError(
            f"libpython{version}.so.1.0 is missing (the Python backend stub embeds it): "
            f"install it, e.g. `apt-get install libpython{version}`"
        )


def check_port_free(host: str, port: int, what: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            env = {"HTTP": "HTTP_PORT", "gRPC": "GRPC_PORT", "metrics": "METRICS_PORT"}[what]
            raise ServerError(
                f"{what} port {host}:{port} is in use ({error.strerror}): stop what uses it or pick another, "
                f"e.g. `make serve {env}={port + 10}`"
            ) from error


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def check_built_model(ensemble: Ensemble, classifier: str = DEFAULT_CLASSIFIER) -> None:
    """Loads the files the classifier variant serves (model.pt or model.onnx) and tokenizer.json once,
    so a broken file is one line here, not a Triton log."""
    from tokenizers import Tokenizer

    for path, load in ((ensemble.served_file(classifier), _load_model), (ensemble.tokenizer_file, Tokenizer.from_file)):
        rel = _relative(path)
        if not path.is_file():
            other = " (or serve model.pt: --classifier python)" if path == ensemble.onnx_file else ""
            raise ServerError(f"{rel} is missing: build the model with `{OFFLINE_BUILD_COMMAND}`{other}")
        try:
            load(str(path))
        except Exception as error:  # torch and tokenizers raise several types for a bad file
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ServerError(
                f"{rel} cannot be loaded ({first[:160]}): rebuild it with `{OFFLINE_BUILD_COMMAND}`"
            ) from error


def _load_model(path: str):
    """model.onnx with ONNX Runtime, model.pt with torch: as the classifier variants load them."""
    if path.endswith(".onnx"):
        import onnxruntime

        return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    import torch

    return torch.jit.load(path)


def check_repository_folders(repository: Path) -> None:
    """Every folder in the repository must be a model: tritonserver loads each one (hidden ones too)
    and, in model control mode `none`, stops when one fails to load."""
    foreign = sorted(
        folder.name
        for folder in Path(repository).iterdir()
        if folder.is_dir() and not (folder / "config.pbtxt").is_file()
    )
    if foreign:
        raise ServerError(
            f"{_relative(Path(repository) / foreign[0])} is not a model (no config.pbtxt) and tritonserver would "
            f"fail to load it{f' (and {len(foreign) - 1} more)' if len(foreign) > 1 else ''}: remove it"
        )


def _relative(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class LocalServer:
    """One tritonserver process serving the repository on loopback; a context manager."""

    def __init__(self, options: ServerOptions):
        self.options = options
        self.ensemble = Ensemble.read(options.repository, options.ensemble)
        self.process: subprocess.Popen | None = None
        self._terminating = False
        self._signalled = 0.0  # when SIGTERM was sent
        self._hold: http.client.HTTPConnection | None = None  # the connection that keeps Triton draining
        self._shm_regions: set[str] = set()  # the stubs' shared-memory keys, removed if tritonserver leaves them
        self._workdir = Path(tempfile.mkdtemp(prefix="emotion-triton-"))
        self.log_file = Path(options.log_file or self._workdir / "tritonserver.log")

    @property
    def http_url(self) -> str:
        return f"{self.options.host}:{self.options.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.options.host}:{self.options.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.options.host}:{self.options.metrics_port}/metrics"

    def command(self) -> list[str]:
        o = self.options
        return [
            str(pytriton_dir() / "bin" / "tritonserver"),
            f"--model-repository={Path(o.repository).resolve()}",
            f"--model-config-name={CLASSIFIER_CONFIGS[o.classifier]}",
            f"--backend-directory={backend_directory(self._workdir, pytorch=self.needs_pytorch_backend)}",
            *common_flags(o.exit_timeout, o.admin_key),
            f"--http-address={o.host}",
            f"--http-port={o.http_port}",
            f"--grpc-address={o.host}",
            f"--grpc-port={o.grpc_port}",
            f"--metrics-address={o.host}",
            f"--metrics-port={o.metrics_port}",
            "--allow-gpu-metrics=false",
            *o.extra_args,
        ]

    @property
    def needs_pytorch_backend(self) -> bool:
        """Whether the selected classifier config runs on Triton's PyTorch (libtorch) backend."""
        config = self.ensemble.config(self.ensemble.classifier, CLASSIFIER_CONFIGS[self.options.classifier])
        return config.platform == "pytorch_libtorch" or config.backend == "pytorch"

    def preflight(self) -> None:
        if self.options.classifier not in CLASSIFIER_CONFIGS:
            raise ServerError(f"unknown classifier '{self.options.classifier}': choose {', '.join(CLASSIFIER_CONFIGS)}")
        check_libpython()
        for what, port in (
            ("HTTP", self.options.http_port),
            ("gRPC", self.options.grpc_port),
            ("metrics", self.options.metrics_port),
        ):
            check_port_free(self.options.host, port, what)
        check_repository_folders(self.options.repository)
        check_built_model(self.ensemble, self.options.classifier)

    def start(self) -> None:
        self.preflight()
        env = dict(os.environ)
        # The stub finds numpy, torch and tokenizers through the first `python3` on PATH.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        # The PyTorch backend links the torch wheel's libtorch.so.
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(torch_dir() / "lib"), env.get("LD_LIBRARY_PATH")]))
        log = open(self.log_file, "ab")  # noqa: SIM115 - owned by the process for its lifetime
        self._terminating = False
        self.process = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log.close()
        self.wait_until_serving()
        self._shm_regions |= {key for _, stub in self.stubs() for key in stub.cmdline() if key.startswith(SHM_PREFIX)}

    def wait_until_serving(self) -> None:
        deadline = time.monotonic() + self.options.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"tritonserver exited with code {self.process.returncode}: {self.log_summary()}")
            if self.canary(timeout=5.0):
                return
            time.sleep(0.25)
        self.stop()
        raise ServerError(
            f"the ensemble did not answer within {self.options.ready_timeout:.0f} s: {self.log_summary()}"
        )

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def canary(self, timeout: float = 5.0) -> bool:
        """True when the ensemble answers a real inference: the only proof that every step works."""
        return self.health_problem(timeout, overloaded_ok=False) is None

    def health_problem(self, timeout: float = 10.0, overloaded_ok: bool = True) -> str | None:
        """None when the server is ready and the ensemble answers one text; otherwise why not, in one line.

        With `overloaded_ok`, an overload answer (503/429: queue full or queue timeout) counts as healthy,
        as in deploy/healthcheck.py: the server answered, and restarting a busy server helps nobody.
        """
        if self.process is not None and self.process.poll() is not None:
            return f"tritonserver exited with code {self.process.returncode}"
        if not self.is_ready():
            return "/v2/health/ready does not answer 200"
        config = self.ensemble.config(self.ensemble.name)
        body = {"inputs": [{"name": config.input[0].name, "shape": [1, 1], "datatype": "BYTES", "data": [CANARY_TEXT]}]}
        request = urllib.request.Request(
            f"http://{self.http_url}/v2/models/{self.ensemble.name}/infer",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                outputs = json.load(response).get("outputs", [])
        except urllib.error.HTTPError as error:
            if overloaded_ok and error.code in OVERLOADED:
                return None
            return f"the canary inference answered {error.code}: {_error_text(error)}"
        except (urllib.error.URLError, OSError) as error:
            return f"the canary inference got no answer ({getattr(error, 'reason', error)}; timeout {timeout:g} s)"
        except ValueError:
            return "the canary inference answered invalid JSON"
        if len(outputs) != len(config.output):
            return f"the canary inference answered {len(outputs)} outputs instead of {len(config.output)}"
        return None

    def stubs(self) -> list[tuple[str, psutil.Process]]:
        """(model name, process) of each running Python backend stub of this tritonserver."""
        if self.process is None or self.process.poll() is not None:
            return []
        found = []
        try:
            children = psutil.Process(self.process.pid).children()
        except psutil.Error:
            return []
        for child in children:
            try:
                args = child.cmdline()
                if child.status() == psutil.STATUS_ZOMBIE or not args[0].endswith("triton_python_backend_stub"):
                    continue
            except (psutil.Error, IndexError):
                continue
            found.append((Path(args[1]).parents[1].name, child))  # <repository>/<model>/<version>/model.py
        return found

    def memory(self) -> MemoryUsage:
        """Resident memory of tritonserver and its stubs, and the size of the stubs' /dev/shm regions."""
        rss = 0
        pids = [stub.pid for _, stub in self.stubs()] + ([self.process.pid] if self.process else [])
        for pid in pids:
            try:
                rss += psutil.Process(pid).memory_info().rss
            except psutil.Error:  # gone meanwhile
                pass
        shm = 0
        for key in self._shm_regions:
            try:
                shm += (SHM_DIR / key).stat().st_size
            except OSError:
                pass
        return MemoryUsage(rss, shm)

    def log_summary(self, lines: int = 3) -> str:
        """The last error lines of tritonserver's log, without the GPU noise of a CPU-only machine."""
        try:
            text = self.log_file.read_text(errors="replace").splitlines()
        except OSError:
            return f"no log at {self.log_file}"
        noise = ("CUDA", "cuda", "NVML", "DCGM", "GPU", "pinned memory", "stream")
        errors = [line for line in text if line.startswith("E") and not any(word in line for word in noise)]
        return " | ".join(errors[-lines:]) or f"see {self.log_file}"

    def terminate(self, drain: bool = True) -> None:
        """Sends SIGTERM once; with `drain`, first opens the connection that `stop` holds while requests finish.

        Triton 2.51 shuts down in two phases. First it closes its HTTP listener (new connections are
        refused) and keeps serving until the HTTP connections already open are closed. Then it stops
        its models, and from then on also refuses the next step of an ensemble request that is in
        flight ("Server is stopping", 503). Holding one idle HTTP connection keeps it in the first
        phase until the composing models have no request left (see `stop`).
        """
        if self.process is None or self.process.poll() is not None or self._terminating:
            return
        self._terminating = True
        if drain:
            self._hold = http.client.HTTPConnection(self.options.host, self.options.http_port, timeout=2)
            try:
                self._hold.request("GET", "/v2/health/live")
                self._hold.getresponse().read()
            except (OSError, http.client.HTTPException):  # not answering: nothing to drain
                self._release()
        self._signalled = time.monotonic()
        self.process.send_signal(signal.SIGTERM)

    def stop(self, grace: float | None = None, drain: bool = True) -> int | None:
        """SIGTERM, then up to `grace` seconds (exit_timeout + 5) for requests in flight, then SIGKILL.

        With `drain`, the requests in flight finish before tritonserver stops its models (within
        exit_timeout); without, a broken server is stopped as fast as it goes.
        """
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.terminate(drain)
            deadline = time.monotonic() + (self.options.exit_timeout + 5 if grace is None else grace)
            if self._hold is not None:
                self._wait_for_idle_models(min(deadline, self._signalled + self.options.exit_timeout - 1))
            self._release()
            try:
                self.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._release()
        self._remove_shm_regions()
        return self.process.returncode

    def _wait_for_idle_models(self, until: float) -> None:
        """Until no composing model has a request queued or running (twice in a row), or `until`."""
        idle = 0
        while time.monotonic() < until and self.process.poll() is None and idle < 2:
            try:
                metrics = triton_metrics(self.metrics_url, timeout=1)
            except (urllib.error.URLError, OSError):
                return
            # The ensemble itself does not count; its requests are pending in one of its steps.
            pending = sum(
                value
                for (name, model), value in metrics.items()
                if name == "nv_inference_pending_request_count" and model != self.ensemble.name
            )
            idle = idle + 1 if pending == 0 else 0
            time.sleep(0.05)

    def _release(self) -> None:
        if self._hold is not None:
            self._hold.close()
            self._hold = None

    def _remove_shm_regions(self) -> None:
        """Shared memory a killed tritonserver or stub left behind (it removes its own on a clean exit)."""
        for key in self._shm_regions:
            (SHM_DIR / key).unlink(missing_ok=True)
        self._shm_regions.clear()

    def __enter__(self) -> LocalServer:
        if self.process is None or self.process.poll() is not None:  # a started server is only stopped on exit
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def triton_metrics(metrics_url: str, timeout: float = 10.0) -> dict[tuple[str, str], float]:
    """Triton's per-model metrics: {(metric name, model name): value, summed over versions}."""
    with urllib.request.urlopen(metrics_url, timeout=timeout) as response:
        text = response.read().decode()
    values: dict[tuple[str, str], float] = {}
    for name, model, value in re.findall(r'^(\w+)\{model="([^"]+)"[^}]*\} (\S+)$', text, re.MULTILINE):
        values[name, model] = values.get((name, model), 0.0) + float(value)
    return values


# The classifier's tokens without and with padding, counted by the postprocess step's model.py
# (which cannot import this package; a test reads both names from a served model's metrics).
REAL_TOKENS, COMPUTED_TOKENS = "emotion_classifier_real_tokens_total", "emotion_classifier_computed_tokens_total"


def metric_total(metrics: dict[tuple[str, str], float], name: str, model: str | None = None) -> float:
    """A metric of `triton_metrics` summed over the models reporting it, or only `model`'s."""
    return sum(value for (n, m), value in metrics.items() if n == name and model in (None, m))


def _error_text(error: urllib.error.HTTPError) -> str:
    """The first line of Triton's {"error": "..."} answer."""
    try:
        text = str(json.loads(error.read().decode("utf-8", "replace")).get("error", ""))
    except (OSError, ValueError, AttributeError):
        text = ""
    return (text.strip().splitlines() or [str(error.reason)])[0][:200]


def serve_forever(
    server: LocalServer,
    canary_interval: float = 5.0,
    max_restarts: int = 3,
    canary_failures: int = 2,
    canary_timeout: float = 10.0,
    restart_window: float = 600.0,
) -> int:
    """Runs until SIGINT/SIGTERM (exit 0) or until tritonserver cannot be kept serving (exit 1).

    Every `canary_interval` seconds one text goes through the ensemble (`LocalServer.health_problem`).
    `canary_failures` failures without `canary_failures` successes in a row between them, or
    tritonserver exiting, restart it; the restart after `max_restarts` restarts within
    `restart_window` seconds ends the process instead. Successes in a row, not one success, clear
    the count: with two instances of a step and one dead stub, every other canary succeeds.
    """
    stopping = []

    def on_signal(signum, _frame):
        stopping.append(signum)
        server.terminate()  # new HTTP connections are refused now, not after the current canary

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    restarts: list[float] = []  # when the recent restarts happened
    failures = successes = 0
    next_check = time.monotonic() + canary_interval
    while not stopping:
        time.sleep(max(0.0, min(0.2, next_check - time.monotonic())))
        exited = server.process.poll() is not None
        if stopping or (not exited and time.monotonic() < next_check):
            continue
        next_check = time.monotonic() + canary_interval
        problem = server.health_problem(canary_timeout)
        if stopping:
            break
        if problem is None:
            successes += 1
            if successes >= canary_failures:
                failures = 0
            continue
        failures, successes = failures + 1, 0
        if failures < canary_failures and not exited:
            print(f"canary failed ({failures}/{canary_failures}): {problem}", file=sys.stderr)
            continue
        now = time.monotonic()
        restarts = [when for when in restarts if now - when < restart_window]
        if len(restarts) >= max_restarts:
            print(
                f"error: the ensemble stopped answering ({problem}) and {len(restarts)} restarts within "
                f"{restart_window:.0f} s did not help: {server.log_summary()}",
                file=sys.stderr,
            )
            server.stop(RESTART_GRACE, drain=False)
            return 1
        restarts.append(now)
        print(
            f"the ensemble stopped answering ({problem}); restarting tritonserver ({len(restarts)}/{max_restarts})",
            file=sys.stderr,
            flush=True,
        )
        server.stop(RESTART_GRACE, drain=False)  # requests in flight fail anyway: a step of the ensemble is broken
        try:
            server.start()
        except ServerError as error:
            if stopping:
                break
            print(f"error: {error}", file=sys.stderr)
            return 1
        print("tritonserver restarted: the ensemble answers again", file=sys.stderr, flush=True)
        failures = 0
        next_check = time.monotonic() + canary_interval
    return stop_cleanly(server)


def stop_cleanly(server: LocalServer) -> int:
    """The normal end of a serving server (SIGINT/SIGTERM): requests in flight complete; exit code 0."""
    print("stopping tritonserver (requests in flight complete first)", flush=True)
    code = server.stop()
    print(f"tritonserver stopped (exit code {code})", flush=True)
    return 0


def _interrupt(_signum, _frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None, prepare: Callable[[Ensemble], None] | None = None) -> int:
    """The supervised local server; `prepare` runs once before the first start (the serve command builds a
    missing model there: this layer never imports the build)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    defaults = ServerOptions()
    parser = argparse.ArgumentParser(description="Serve the emotion ensemble with a local tritonserver on the CPU.")
    parser.add_argument("--repository", type=Path, default=defaults.repository)
    parser.add_argument(
        "--classifier",
        choices=sorted(CLASSIFIER_CONFIGS),
        default=defaults.classifier,
        help="libtorch: the production config on Triton's PyTorch backend (CPU instances); "
        "python: the same model.pt in a Python-backend model (default: %(default)s)",
    )
    parser.add_argument("--host", default=defaults.host, help="address to bind (default: loopback only)")
    parser.add_argument("--http-port", type=int, default=defaults.http_port)
    parser.add_argument("--grpc-port", type=int, default=defaults.grpc_port)
    parser.add_argument("--metrics-port", type=int, default=defaults.metrics_port)
    parser.add_argument(
        "--exit-timeout", type=int, default=defaults.exit_timeout, help="seconds requests in flight get on shutdown"
    )
    parser.add_argument("--log-file", type=Path, help="tritonserver's log (default: a temporary file)")
    parser.add_argument(
        "--canary-interval", type=float, default=5.0, help="seconds between two canary inferences (default: 5)"
    )
    parser.add_argument(
        "--canary-failures", type=int, default=2, help="failed canaries in a row that restart tritonserver (default: 2)"
    )
    parser.add_argument(
        "--canary-timeout", type=float, default=10.0, help="seconds the canary waits for its answer (default: 10)"
    )
    parser.add_argument(
        "--max-restarts",
        type=int,
        default=3,
        help="restarts within 10 minutes before the server gives up with exit code 1 (default: 3)",
    )
    args = parser.parse_args(argv)
    options = ServerOptions(
        repository=args.repository,
        classifier=args.classifier,
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        exit_timeout=args.exit_timeout,
        log_file=args.log_file,
    )
    server = LocalServer(options)
    print(f"starting tritonserver on {options.host} (log: {server.log_file})", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)  # a SIGTERM while starting stops tritonserver too
    try:
        if prepare is not None:
            prepare(server.ensemble)
        server.start()
    except ServerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        server.stop()
        return 130
    try:
        print(
            f"serving ensemble '{options.ensemble}' ({', '.join(server.ensemble.labels)}), "
            f"classifier: {options.classifier} (configs/{CLASSIFIER_CONFIGS[options.classifier]}.pbtxt)"
        )
        print(f"  HTTP     http://{server.http_url}")
        print(f"  gRPC     {server.grpc_url}")
        print(f"  metrics  {server.metrics_url}")
        print(f'  try:     python client/classify.py --url {server.grpc_url} --text "i feel great today"')
        print("Ctrl-C stops it.", flush=True)
        return serve_forever(
            server,
            canary_interval=args.canary_interval,
            max_restarts=args.max_restarts,
            canary_failures=args.canary_failures,
            canary_timeout=args.canary_timeout,
        )
    except KeyboardInterrupt:  # a signal after start, before serve_forever's handlers took over
        return stop_cleanly(server)


if __name__ == "__main__":
    sys.exit(main())
