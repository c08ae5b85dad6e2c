"""CPU stand-ins for the base images of the project's Dockerfiles, built here from Debian's and PyPI's
packages and tagged under the names the Dockerfiles and docker-compose.yml use, so those files build
and run unchanged on a machine that cannot reach NVIDIA's registry or Docker Hub (docker/stand-in/).

Each image is built only when its inputs changed: it is tagged `emotion-triton/stand-in-<name>:<digest
of its inputs>` as well as under the public name, and an image that already has its digest tag is
only (re)tagged. A second `make containers` therefore takes seconds.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..paths import PROJECT_ROOT, SHARED_DIR
from .engine import STATE_DIR

STAND_IN_DIR = PROJECT_ROOT / "docker" / "stand-in"
CONTEXTS = STATE_DIR / "stand-in-contexts"
WHEELS = STATE_DIR / "stand-in-wheels"
LOCK = PROJECT_ROOT / "requirements.lock"
VENDORED_TRITON = SHARED_DIR / "vendor" / "triton-r24.10"
DEBIAN_SUITE = "bookworm"  # the Debian of this kind of machine, and its Python 3.11
DEBIAN_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
DEBIAN_FALLBACK_MIRROR = "http://deb.debian.org/debian"
# The CAs this machine trusts beyond Debian's own (a TLS-re-signing proxy to the registries): the
# stand-ins trust them too, so the project's Dockerfiles can `pip install` while they are built.
EXTRA_CA_DIR = Path("/usr/local/share/ca-certificates")
# What the backend build stage imports of the package: `make setup`'s own code, nothing more.
BACKEND_BUILD_MODULES = ("__init__.py", "paths.py", "serving/__init__.py", "serving/pytorch_backend.py")


class StandInError(RuntimeError):
    """One line: which stand-in could not be built, why, and where the log is."""


def ngc_release() -> str:
    """The NVIDIA release the project pins, once (x-ngc-release in docker-compose.yml)."""
    return str(yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())["x-ngc-release"])


def pinned(package: str) -> str:
    """The version requirements.lock pins for a package."""
    for line in LOCK.read_text().splitlines():
        name, _, version = line.partition("==")
        if name.strip().lower().replace("_", "-") == package:
            return version.strip()
    raise StandInError(f"{package} is not pinned in {LOCK.name}")


def compose_image(service: str) -> str:
    """The image a service of docker-compose.yml runs (the monitoring profile's come from Docker Hub)."""
    return yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())["services"][service]["image"]


@dataclass
class StandIn:
    """One image: its public tag, and how its build context is made from which inputs."""

    name: str
    tag: str
    inputs: Callable[[], Iterable[Path | str]]  # files, folders and strings whose change means a rebuild
    build: Callable[[StandIn, str, Path], None]  # (self, base image, log) -> builds self.digest_tag
    base: StandIn | None = None
    _digest: str | None = field(default=None, repr=False)

    @property
    def digest(self) -> str:
        if self._digest is None:
            digest = hashlib.sha256(self.name.encode())
            if self.base is not None:
                digest.update(self.base.digest.encode())
            for item in self.inputs():
                _update(digest, item)
            self._digest = digest.hexdigest()[:16]
        return self._digest

    @property
    def digest_tag(self) -> str:
        return f"emotion-triton/stand-in-{self.name}:{self.digest}"

    def ensure(self, progress=print) -> str:
        """'cached' or 'built (N s)'; builds the base first when it is missing."""
        if self.base is not None:
            self.base.ensure(progress)
        if _image_id(self.digest_tag) is None:
            started = time.monotonic()
            log = STATE_DIR / f"stand-in-{self.name}.log"
            progress(f"building the stand-in {self.tag} ({self.digest_tag}); log: {log}")
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text("")
            self.build(self, self.base.digest_tag if self.base else "", log)
            state = f"built ({time.monotonic() - started:.0f} s)"
        else:
            state = "cached"
        if _image_id(self.tag) != _image_id(self.digest_tag):
            _docker(["tag", self.digest_tag, self.tag])
        return state


def _update(digest, item: Path | str) -> None:
    if isinstance(item, str):
        digest.update(item.encode())
    elif item.is_dir():
        for path in sorted(p for p in item.rglob("*") if p.is_file()):
            digest.update(str(path.relative_to(item)).encode())
            digest.update(path.read_bytes())
    else:
        digest.update(item.name.encode())
        digest.update(item.read_bytes() if item.stat().st_size < 1 << 24 else str(item.stat().st_size).encode())


def _image_id(tag: str) -> str | None:
    result = subprocess.run(["docker", "image", "inspect", "--format={{.Id}}", tag], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def _docker(args: list[str], log: Path | None = None, progress=None, **kwargs) -> None:
    _run(["docker", *args], log, progress, **kwargs)


def _run(command: list[str], log: Path | None = None, progress=None, **kwargs) -> None:
    """Runs a command, its output appended to `log`; Docker's `Step n/m` lines go to progress."""
    output = open(log, "a") if log else None  # noqa: SIM115 - closed below
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)
        lines = []
        for line in process.stdout:
            lines.append(line)
            if output:
                output.write(line)
            if progress and re.match(r"Step \d+/\d+ :", line):
                progress(f"  {line.strip()[:120]}")
        if process.wait() != 0:
            last = next((line.strip() for line in reversed(lines) if line.strip()), "no output")
            raise StandInError(
                f"`{' '.join(command[:3])} ...` failed: {last[:240]}" + (f" (log: {log})" if log else "")
            )
    finally:
        if output:
            output.close()


# The Debian base: debootstrap from this machine's mirror, the extra CAs, pip told to use them.


def debian_mirror() -> str:
    if DEBIAN_SOURCES.is_file():
        found = re.search(r"^URIs:\s*(\S+)", DEBIAN_SOURCES.read_text(), re.MULTILINE)
        if found:
            return found.group(1)
    return DEBIAN_FALLBACK_MIRROR


def _debian_inputs() -> list[Path | str]:
    return [DEBIAN_SUITE, debian_mirror(), *sorted(EXTRA_CA_DIR.glob("*.crt"))]


def _build_debian(stand_in: StandIn, base: str, log: Path) -> None:
    if not shutil.which("debootstrap"):
        raise StandInError("debootstrap is missing (Debian: apt-get install debootstrap)")
    with tempfile.TemporaryDirectory(prefix="stand-in-debian-") as work:
        rootfs = Path(work) / "rootfs"
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=ca-certificates",
                DEBIAN_SUITE,
                str(rootfs),
                debian_mirror(),
            ],
            log,
        )
        for certificate in EXTRA_CA_DIR.glob("*.crt"):
            shutil.copyfile(certificate, rootfs / "usr/local/share/ca-certificates" / certificate.name)
        _run(["chroot", str(rootfs), "update-ca-certificates"], log)
        # pip bundles its own CAs; this makes it use the system's, the extra ones included.
        (rootfs / "etc/pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")
        shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
        (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        _docker(["import", "--change", 'CMD ["/bin/bash"]', "-", stand_in.digest_tag], log, stdin=tar.stdout)
        if tar.wait() != 0:
            raise StandInError(f"tar of {rootfs} failed (log: {log})")


# The images built with `docker build` from a context assembled here.


def _wheels() -> list[Path]:
    """The torch and nvidia-pytriton wheels of the lock (pip's find-links serve torch's CPU build here)."""
    WHEELS.mkdir(parents=True, exist_ok=True)
    wanted = {"torch": pinned("torch"), "nvidia-pytriton": pinned("nvidia-pytriton")}
    found = []
    for name, version in wanted.items():
        pattern = f"{name.replace('-', '_')}-{version}*.whl"
        if not list(WHEELS.glob(pattern)):
            _run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--quiet",
                    "--no-deps",
                    "-d",
                    str(WHEELS),
                    f"{name}=={version}",
                ]
            )
        found += sorted(WHEELS.glob(pattern))[:1]
    return found


def _context(stand_in: StandIn, files: dict[str, Path]) -> Path:
    """A fresh build context: `files` maps a path in the context to a file or folder (wheels are linked)."""
    context = CONTEXTS / stand_in.name
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    for target, source in files.items():
        destination = context / target
        destination.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, destination)
        else:
            try:
                os.link(source, destination)
            except OSError:
                shutil.copyfile(source, destination)
    return context


def _docker_build(stand_in: StandIn, base: str, log: Path, files: dict[str, Path], progress=print) -> None:
    context = _context(stand_in, files)
    dockerfile = STAND_IN_DIR / f"{stand_in.name}.Dockerfile"
    shutil.copyfile(dockerfile, context / "Dockerfile")
    # The classic builder: Debian's docker.io has no buildx, and these contexts need nothing newer.
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    _docker(["build", "--build-arg", f"BASE={base}", "-t", stand_in.digest_tag, str(context)], log, progress, env=env)
    shutil.rmtree(context, ignore_errors=True)


def _tritonserver_files() -> dict[str, Path]:
    package = PROJECT_ROOT / "src" / "emotion_triton"
    files = {f"wheels/{wheel.name}": wheel for wheel in _wheels()}
    files |= {f"python/emotion_triton/{module}": package / module for module in BACKEND_BUILD_MODULES}
    return files | {"vendor": VENDORED_TRITON, "requirements.lock": LOCK}


def _pytorch_files() -> dict[str, Path]:
    return {f"wheels/{wheel.name}": wheel for wheel in _wheels() if wheel.name.startswith("torch-")} | {
        "requirements.lock": LOCK
    }


def stand_ins() -> dict[str, StandIn]:
    """The stand-ins by name: debian (the base of the others), tritonserver, pytorch, prometheus."""
    release = ngc_release()
    package = PROJECT_ROOT / "src" / "emotion_triton"
    debian = StandIn("debian", f"emotion-triton/stand-in-debian:{DEBIAN_SUITE}", _debian_inputs, _build_debian)

    def dockerfile(name: str) -> Path:
        return STAND_IN_DIR / f"{name}.Dockerfile"

    return {
        "debian": debian,
        "tritonserver": StandIn(
            "tritonserver",
            f"nvcr.io/nvidia/tritonserver:{release}-py3",
            lambda: (
                [dockerfile("tritonserver"), LOCK, VENDORED_TRITON, *(package / m for m in BACKEND_BUILD_MODULES)]
                + [f"{pinned('torch')} {pinned('nvidia-pytriton')}"]
            ),
            lambda self, base, log: _docker_build(self, base, log, _tritonserver_files()),
            base=debian,
        ),
        "pytorch": StandIn(
            "pytorch",
            f"nvcr.io/nvidia/pytorch:{release}-py3",
            lambda: [dockerfile("pytorch"), LOCK, pinned("torch")],
            lambda self, base, log: _docker_build(self, base, log, _pytorch_files()),
            base=debian,
        ),
        "prometheus": StandIn(
            "prometheus",
            compose_image("prometheus"),
            lambda: [dockerfile("prometheus")],
            lambda self, base, log: _docker_build(self, base, log, {}),
            base=debian,
        ),
    }


def ensure_stand_ins(names: Iterable[str] | None = None, progress=print) -> dict[str, str]:
    """Builds the stand-ins whose inputs changed and tags them; returns each one's state."""
    images = stand_ins()
    return {name: images[name].ensure(progress) for name in (names or images)}
