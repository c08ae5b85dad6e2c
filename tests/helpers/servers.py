"""Local tritonservers and model repositories for the tests: the classifier variants, a copy of the
project's repository, a server started on free ports."""

from __future__ import annotations

from pathlib import Path

from emotion_triton.repository import CLASSIFIER_CONFIGS, copy_sources
from emotion_triton.serving.local_server import LocalServer, ServerOptions

# Every classifier variant a CPU host serves: the production libtorch config and the Python backend.
CLASSIFIERS = tuple(CLASSIFIER_CONFIGS)


def copy_repository(target: Path) -> Path:
    """The project's model repository (configs and model.py files only) in a temporary folder."""
    return copy_sources(target)


def start_server(repository: Path, tmp_path: Path, **kwargs) -> LocalServer:
    options = ServerOptions.on_free_ports(
        repository=repository,
        log_file=tmp_path / "tritonserver.log",
        **kwargs,
    )
    server = LocalServer(options)
    server.start()
    return server
