"""`make containers` without an engine: what it says when none can be had, and when it rebuilds.

The engine and the images themselves run in tests/deployment/test_containers.py; these need neither.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from emotion_lab.containers import engine, stand_ins
from emotion_lab.containers.engine import EngineUnavailable, ensure_engine
from emotion_lab.containers.stand_ins import StandIn


def test_a_machine_that_cannot_run_an_engine_is_told_why_in_one_line(monkeypatch):
    monkeypatch.setattr(engine.shutil, "which", lambda tool: None)  # no docker, no dockerd, no apt-get
    with pytest.raises(EngineUnavailable) as raised:
        ensure_engine(progress=lambda line: None)
    message = str(raised.value)
    assert "\n" not in message
    assert (
        message
        == "no container engine: dockerd is missing; install Docker (Debian: apt-get install docker.io containerd)"
    )


def test_a_dockerd_that_exits_at_once_is_reported_with_its_last_log_line(monkeypatch, tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "dockerd").write_text("#!/bin/sh\necho 'failed to start daemon: permission denied' >&2\nexit 1\n")
    (fake / "docker").write_text("#!/bin/sh\nexit 1\n")  # `docker info`: no engine answers
    for tool in fake.iterdir():
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:/usr/bin:/bin")
    monkeypatch.setattr(engine, "DOCKERD_LOG", tmp_path / "dockerd.log")
    monkeypatch.setattr(engine, "DOCKERD_PID", tmp_path / "dockerd.pid")
    with pytest.raises(EngineUnavailable, match="^dockerd exited with 1: failed to start daemon: permission denied$"):
        ensure_engine(progress=lambda line: None)
    assert not (tmp_path / "dockerd.pid").exists(), "nothing left to stop"


def test_stop_engine_stops_only_the_dockerd_it_started(monkeypatch, tmp_path):
    monkeypatch.setattr(engine, "DOCKERD_PID", tmp_path / "dockerd.pid")
    assert engine.stop_engine(progress=lambda line: None) is False, "none started: nothing stopped"
    # Not a child of this process (as dockerd is not of a later `make containers-stop`): sh starts it and exits.
    started = subprocess.run(["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"], capture_output=True, text=True)
    pid = int(started.stdout)
    (tmp_path / "dockerd.pid").write_text(f"{pid}\n")
    assert engine.stop_engine(progress=lambda line: None) is True
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not (tmp_path / "dockerd.pid").exists()


def test_a_stand_in_is_rebuilt_exactly_when_one_of_its_inputs_changes(tmp_path, monkeypatch):
    dockerfile, sources = tmp_path / "x.Dockerfile", tmp_path / "sources"
    dockerfile.write_text("FROM base\n")
    sources.mkdir()
    (sources / "a.cc").write_text("int a;\n")
    base = StandIn("base", "base:1", lambda: ["bookworm"], build=lambda *_: None)
    image = StandIn("x", "x:1", lambda: [dockerfile, sources, "torch 2.13.0"], build=lambda *_: None, base=base)

    def digest() -> str:
        for each in (base, image):
            each._digest = None  # computed once per `make containers` run
        return image.digest_tag

    first = digest()
    assert digest() == first, "the same inputs: the same tag, so nothing is built"
    changes = [
        lambda: (sources / "a.cc").write_text("int b;\n"),
        lambda: (sources / "b.cc").write_text(""),
        lambda: dockerfile.write_text("FROM base\nRUN true\n"),
        lambda: setattr(base, "inputs", lambda: ["trixie"]),
    ]
    seen = {first}
    for change in changes:
        change()
        seen.add(digest())
    assert len(seen) == len(changes) + 1, "every change of an input, the base's included, means a rebuild"


def test_the_stand_ins_are_tagged_as_the_project_files_name_their_base_images():
    images = stand_ins.stand_ins()
    release = stand_ins.ngc_release()
    tritonserver = (stand_ins.PROJECT_ROOT / "docker" / "tritonserver.Dockerfile").read_text()
    build = (stand_ins.PROJECT_ROOT / "docker" / "build.Dockerfile").read_text()
    assert "FROM nvcr.io/nvidia/tritonserver:${NGC_RELEASE}-py3" in tritonserver
    assert "FROM nvcr.io/nvidia/pytorch:${NGC_RELEASE}-py3" in build
    assert images["tritonserver"].tag == f"nvcr.io/nvidia/tritonserver:{release}-py3"
    assert images["pytorch"].tag == f"nvcr.io/nvidia/pytorch:{release}-py3"
    assert images["prometheus"].tag == stand_ins.compose_image("prometheus")
    assert all(image.base is images["debian"] for name, image in images.items() if name != "debian")


def test_a_machine_without_debootstrap_installs_it_or_says_how(monkeypatch, tmp_path):
    """A fresh machine of this kind has no debootstrap: as root it is installed like the engine; elsewhere one line."""
    from emotion_lab.containers import image_builds

    installed = []
    monkeypatch.setattr(image_builds.shutil, "which", lambda tool: None)
    monkeypatch.setattr(image_builds, "install_packages", lambda packages, *args: installed.append(packages))
    monkeypatch.setattr(image_builds, "run", lambda command, log: (_ for _ in ()).throw(RuntimeError("stop here")))
    with pytest.raises(RuntimeError, match="stop here"):
        image_builds.build_debian_base("tag", "bookworm", tmp_path / "log")
    assert installed == [("debootstrap",)]
    monkeypatch.setattr(engine.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(image_builds, "install_packages", engine.install_packages)
    with pytest.raises(
        image_builds.StandInError, match=r"^debootstrap is missing; install it \(Debian: apt-get install debootstrap\)$"
    ):
        image_builds.build_debian_base("tag", "bookworm", tmp_path / "log")
