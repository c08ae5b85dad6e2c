"""A real tritonserver without the native PyTorch backend: the libtorch classifier's error points at the Python variant."""

import pytest

from emotion_triton.serving import native_backends
from emotion_triton.serving.local_server import LocalServer, ServerOptions
from emotion_triton.serving.preflight import ServerError


def test_the_libtorch_classifier_without_its_backend_points_at_the_python_variant(
    tmp_path, monkeypatch, built_repository
):
    repository, _ = built_repository("distilbert")
    monkeypatch.setattr(native_backends, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(native_backends.shutil, "which", lambda tool: None)
    options = ServerOptions.on_free_ports(
        repository=repository,
        classifier="libtorch",
    )
    with pytest.raises(ServerError, match="cannot be built: missing cmake .*; or serve the Python-backend"):
        LocalServer(options).command()
