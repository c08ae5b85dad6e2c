"""What the local server checks before it starts tritonserver, each failure one line with its fix:
libpython for the Python backend stub, free ports, a repository of models only, built model files that
load, and the backend folder (the wheel's Python backend, Triton's native backends built here)."""

from __future__ import annotations

import contextlib
import ctypes.util
import socket
import sys
import sysconfig
from pathlib import Path

from ..errors import EmotionTritonError
from ..repository import OFFLINE_BUILD_COMMAND, Ensemble
from .native_backends import BACKENDS, BackendBuildError, NativeBackend


class ServerError(EmotionTritonError, RuntimeError):
    """A one-line cause and fix for why the server cannot start or keep serving."""


def pytriton_dir() -> Path:
    try:
        import pytriton
    except ImportError as error:
        raise ServerError("the nvidia-pytriton wheel is not installed: run `make setup`") from error
    return Path(pytriton.__file__).parent / "tritonserver"


def native_backend(config) -> NativeBackend | None:
    """The native backend a model config runs on (None: the Python backend)."""
    platforms = {"pytorch_libtorch": "pytorch"}
    return BACKENDS.get(config.backend or platforms.get(config.platform, ""))


def backend_directory(cache: Path, native: NativeBackend | None) -> Path:
    """A backend folder: the wheel's Python backend and this Python's stub, and the `native` backend
    built here, all as symlinks.

    The stub finds its bundled libraries relative to its real path, so copies would not run.
    A native backend finds libtritonserver.so next to itself (its
    RUNPATH is $ORIGIN): the wheel renamed that library, so a link under the original name points
    at the copy the server has loaded.
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
    if native is not None:
        try:
            library = native.ensure()
        except BackendBuildError as error:
            raise ServerError(f"{error}; or serve the Python-backend classifier: --classifier onnx") from error
        server_library = next(root.parent.parent.glob("nvidia_pytriton.libs/libtritonserver-*.so"), None)
        if server_library is None:
            raise ServerError("nvidia-pytriton ships no libtritonserver: reinstall it with `make setup`")
        target = cache / "backends" / native.name
        target.mkdir(parents=True, exist_ok=True)
        for name, source in {native.library: library, "libtritonserver.so": server_library}.items():
            _link(target / name, source)
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
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct free ports. The probes stay bound until all are chosen: probed one at a time,
    the OS handed out the same port twice (a CI run's tritonserver got one port for HTTP and gRPC)."""
    with contextlib.ExitStack() as probes:
        sockets = [probes.enter_context(socket.socket()) for _ in range(count)]
        for probe in sockets:
            probe.bind((host, 0))
        return [probe.getsockname()[1] for probe in sockets]


def check_built_model(ensemble: Ensemble, classifier: str, version: int | None = None) -> None:
    """Loads the files the classifier variant serves (model.pt or model.onnx) and tokenizer.json of
    `version` (default: the served one) once, so a broken file is one line here, not a Triton log."""
    from tokenizers import Tokenizer

    tokenizer_file = ensemble.version_dir(ensemble.tokenizer, version) / "tokenizer.json"

    def load_model(path: str):  # as the classifier variants load it
        if path.endswith(".onnx"):
            return ensemble.classifier_module("onnx_session").open_session(path)
        import torch

        return torch.jit.load(path)

    for path, load in ((ensemble.served_file(classifier, version), load_model), (tokenizer_file, Tokenizer.from_file)):
        rel = relative_path(path)
        if not path.is_file():
            other = " (or serve model.pt: --classifier libtorch)" if path.name == "model.onnx" else ""
            raise ServerError(f"{rel} is missing: build the model with `{OFFLINE_BUILD_COMMAND}`{other}")
        try:
            load(str(path))
        except Exception as error:  # torch and tokenizers raise several types for a bad file
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ServerError(
                f"{rel} cannot be loaded ({first[:160]}): rebuild it with `{OFFLINE_BUILD_COMMAND}`"
            ) from error


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
            f"{relative_path(Path(repository) / foreign[0])} is not a model (no config.pbtxt) and tritonserver would "
            f"fail to load it{f' (and {len(foreign) - 1} more)' if len(foreign) > 1 else ''}: remove it"
        )


def relative_path(path: Path) -> str:
    """`path` relative to the working directory when it is below it (for one-line messages)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
