"""One tritonserver process serving the model repository on loopback (`LocalServer`): its command line,
start, inference canary, Python-backend stubs, memory and /dev/shm regions, and a draining stop."""

from __future__ import annotations

import compileall
import http.client
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal, NamedTuple

import psutil
from tyro.conf import Suppress, arg

from ..repository import DEFAULT_CLASSIFIER, DEFAULT_ENSEMBLE, DEFAULT_REPOSITORY, VARIANTS, Ensemble
from ..repository.versions import local_serving_server, server_file, write_server_file
from . import canary
from .native_backends import NativeBackend, torch_dir
from .preflight import (
    ServerError,
    backend_directory,
    check_built_model,
    check_libpython,
    check_port_free,
    check_repository_folders,
    free_ports,
    native_backend,
    pytriton_dir,
)
from .prometheus import triton_metrics
from .tritonserver_flags import TritonServerFlags

SHM_DIR = Path("/dev/shm")
SHM_PREFIX = "triton_python_backend_shm_region_"  # the Python backend's regions, one per stub


class MemoryUsage(NamedTuple):
    rss: int  # bytes resident in tritonserver and its Python stubs
    shm: int  # bytes of the stubs' shared-memory regions in /dev/shm


# The classifier variants, for the command lines' choices.
ClassifierName = Literal[tuple(sorted(VARIANTS))]


@dataclass
class ServerOptions:
    """The tritonserver to start."""

    repository: Path = DEFAULT_REPOSITORY
    """the model repository"""
    ensemble: str = DEFAULT_ENSEMBLE
    """the ensemble model to serve"""
    host: str = "127.0.0.1"
    """address to bind"""
    http_port: int = TritonServerFlags.http_port
    grpc_port: int = TritonServerFlags.grpc_port
    metrics_port: int = TritonServerFlags.metrics_port
    classifier: ClassifierName = DEFAULT_CLASSIFIER
    """onnx: model.onnx on ONNX Runtime in a Python-backend model; libtorch: model.pt on Triton's PyTorch
    backend (the production config on CPU instances); production: the production config as it is (a GPU host)"""
    exit_timeout: int = 30
    """seconds requests in flight get on shutdown"""
    ready_timeout: float = 180.0
    """seconds tritonserver gets to load the models and answer"""
    response_cache_mb: int = 0
    """MiB of Triton's response cache for the classifier step (repeated texts skip the model); 0: off"""
    # Not an option: --help would print its default, the key; TRITON_ADMIN_KEY sets it.
    admin_key: Suppress[str] = field(
        default_factory=lambda: os.environ.get("TRITON_ADMIN_KEY") or secrets.token_urlsafe(24)
    )
    log_file: Annotated[Path | None, arg(help_behavior_hint="(default: a temporary file)")] = None
    """tritonserver's log"""
    extra_args: Suppress[tuple[str, ...]] = ()  # more tritonserver flags, from code only: not an option

    @classmethod
    def on_free_ports(cls, **options) -> ServerOptions:
        """Options of a server on three free loopback ports (tests, the benchmark, the soak)."""
        http_port, grpc_port, metrics_port = free_ports(3)
        return cls(http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port, **options)


def compile_model_code(repository: Path) -> None:
    """Writes the bytecode of the models' code before tritonserver loads it. Tritonserver takes a version
    folder whose contents changed since its load for a changed model: without this, the __pycache__ a
    stub writes at its first load made a roll-out's load of the ensemble reload every step (4 s, twice
    the memory) instead of only the ensemble (3 ms, measured)."""
    compileall.compile_dir(str(repository), quiet=2)


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

    def flags(self) -> TritonServerFlags:
        """The container's flags (TritonServerFlags) with this server's repository, classifier config,
        backend folder and loopback addresses."""
        o = self.options
        return TritonServerFlags(
            model_repository=str(Path(o.repository).resolve()),
            model_config_name=VARIANTS[o.classifier].config_name,
            admin_key=o.admin_key,
            exit_timeout=o.exit_timeout,
            http_port=o.http_port,
            grpc_port=o.grpc_port,
            metrics_port=o.metrics_port,
            address=o.host,
            allow_gpu_metrics=False,
            backend_directory=str(backend_directory(self._workdir, self.native_backend)),
            load_model=self.ensemble.name,  # a repository of the user's may hold other models
            response_cache_bytes=o.response_cache_mb * 1024 * 1024,
            cache_directory=str(pytriton_dir() / "caches"),
            extra=tuple(o.extra_args),
        )

    def command(self) -> list[str]:
        return self.flags().argv(str(pytriton_dir() / "bin" / "tritonserver"))

    @property
    def native_backend(self) -> NativeBackend | None:
        """The native backend the selected classifier config runs on (None: the Python backend)."""
        return native_backend(
            self.ensemble.config(self.ensemble.classifier, VARIANTS[self.options.classifier].config_name)
        )

    def preflight(self) -> None:
        if self.options.classifier not in VARIANTS:
            raise ServerError(f"unknown classifier '{self.options.classifier}': choose {', '.join(VARIANTS)}")
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
        # The classifier's variant configs and the served version's pins, from the tracked configs and
        # the repository's state: a restart serves the version a roll-out left.
        self.ensemble.write_derived_configs()
        compile_model_code(self.options.repository)
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
        # A build or a roll-out run against this repository finds this server (and its admin key) here.
        write_server_file(
            self.options.repository, self.http_url, self.options.admin_key, self.process.pid, self.options.classifier
        )
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

    def canary(self, timeout: float = 5.0) -> bool:
        """True when the ensemble answers a real inference: the only proof that every step works."""
        return self.health_problem(timeout, overloaded_ok=False) is None

    def health_problem(self, timeout: float = 10.0, overloaded_ok: bool = True) -> str | None:
        """None when the server is ready and the ensemble answers one text; otherwise why not, in one line.

        The canary of deploy/healthcheck.py (serving/canary.py). With `overloaded_ok`, an overload answer
        (503/429: queue full or queue timeout) counts as healthy: the server answered, and restarting a
        busy server helps nobody.
        """
        if self.process is not None and self.process.poll() is not None:
            return f"tritonserver exited with code {self.process.returncode}"
        url = f"http://{self.http_url}"
        problem = canary.problem(url, self.ensemble.name, timeout, overloaded_ok)
        if problem is None or not problem.startswith("/v2/health/ready answered"):
            return problem
        # Strict readiness is false for seconds while a roll-out's dropped versions unload, though every
        # request is answered (docs/deploy.md): then the inference decides, not a restart.
        try:
            summary, overloaded = canary.infer(url, self.ensemble.name, timeout)
        except canary.Unhealthy:
            return problem
        return summary if overloaded and not overloaded_ok else None

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
            # http.client, not tritonclient (triton_http): this is not a call of the API but a connection that
            # must stay open, opened in a signal handler, where tritonclient's gevent client would switch greenlets.
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
        self._remove_server_file()
        return self.process.returncode

    def _remove_server_file(self) -> None:
        server = local_serving_server(self.options.repository)
        if server is None or server["pid"] == self.process.pid:  # not another server's
            server_file(self.options.repository).unlink(missing_ok=True)

    def _wait_for_idle_models(self, until: float) -> None:
        """Until no composing model has a request queued or running (twice in a row), or `until`."""
        idle = 0
        while time.monotonic() < until and self.process.poll() is None and idle < 2:
            try:
                metrics = triton_metrics(self.metrics_url, timeout=1)
            except OSError:  # no answer (urllib's errors are OSErrors)
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
