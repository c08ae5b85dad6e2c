"""Triton's PyTorch backend as part of set-up: cached, and a build that cannot run says why in one line.

The builds that work are exercised by every test that serves the libtorch classifier
(`make setup` built it); these tests check the failures a user can meet.
"""

import pytest

from emotion_triton.serving import native_backends
from emotion_triton.serving.native_backends import BACKENDS, PYTORCH, BackendBuildError


@pytest.mark.parametrize("name", BACKENDS)
def test_the_cached_library_is_the_one_for_the_installed_wheel_and_sources(name):
    backend = BACKENDS[name]
    library = backend.ensure()  # built by `make setup`: found, not rebuilt
    assert library == backend.built_library() and library.name == f"libtriton_{name}.so"
    assert library.parent.parent == native_backends.CACHE / name


def test_missing_build_tools_are_named_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(native_backends, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(native_backends.shutil, "which", lambda tool: None)
    with pytest.raises(BackendBuildError) as raised:
        PYTORCH.ensure()
    message = str(raised.value)
    assert "\n" not in message
    assert "missing cmake (cmake), a C++17 compiler (g++)" in message and "apt-get install" in message
    assert not (tmp_path / "cache").exists(), "nothing is built without the tools"


def test_a_failing_build_is_one_line_with_the_cause_and_the_log(tmp_path, monkeypatch):
    sources = tmp_path / "triton-sources"
    (sources / "pytorch_backend").mkdir(parents=True)
    (sources / "pytorch_backend" / "CMakeLists.txt").write_text(
        'cmake_minimum_required(VERSION 3.17)\nproject(broken)\nmessage(FATAL_ERROR "rapidjson not usable")\n'
    )
    monkeypatch.setattr(native_backends, "VENDORED_SOURCES", sources)
    monkeypatch.setattr(native_backends, "CACHE", tmp_path / "cache")
    with pytest.raises(BackendBuildError) as raised:
        PYTORCH.ensure(progress=lambda line: None)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("Triton's PyTorch backend failed while configuring: ")
    assert "rapidjson not usable" in message and "build.log" in message
