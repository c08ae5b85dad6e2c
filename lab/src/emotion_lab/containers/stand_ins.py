"""CPU stand-ins for the base images of the project's Dockerfiles, built here from Debian's and PyPI's
packages and tagged under the names the Dockerfiles and docker-compose.yml use, so those files build
and run unchanged on a machine that cannot reach NVIDIA's registry or Docker Hub (docker/stand-in/).

Each image is built only when its inputs changed: it is tagged `emotion-triton/stand-in-<name>:<digest
of its inputs>` as well as under the public name, and an image that already has its digest tag is
only (re)tagged. A second `make containers` therefore takes seconds.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from emotion_triton.paths import PROJECT_ROOT, SHARED_DIR

from .engine import STATE_DIR
from .image_builds import EXTRA_CA_DIR, StandInError, build_debian_base, debian_mirror, docker_build, image_id

STAND_IN_DIR = PROJECT_ROOT / "docker" / "stand-in"
WHEELS = STATE_DIR / "stand-in-wheels"
LOCK = PROJECT_ROOT / "requirements.lock"
VENDORED_TRITON = SHARED_DIR / "vendor" / "triton-r24.10"
DEBIAN_SUITE = "bookworm"  # the Debian of this kind of machine, and its Python 3.11
# What the backend build stage imports of the package: `make setup`'s own code, nothing more.
BACKEND_BUILD_MODULES = ("__init__.py", "errors.py", "paths.py", "serving/__init__.py", "serving/native_backends.py")
PACKAGE = PROJECT_ROOT / "src" / "emotion_triton"

__all__ = ["StandIn", "StandInError", "ensure_stand_ins", "stand_ins"]


def ngc_release() -> str:
    """The NVIDIA release the project pins, once (x-ngc-release in docker-compose.yml)."""
    return str(yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())["x-ngc-release"])


def compose_image(service: str) -> str:
    """The image a service of docker-compose.yml runs (the monitoring profile's come from Docker Hub)."""
    return yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())["services"][service]["image"]


def pinned(package: str) -> str:
    """The version requirements.lock pins for a package."""
    for line in LOCK.read_text().splitlines():
        name, _, version = line.partition("==")
        if name.strip().lower().replace("_", "-") == package:
            return version.strip()
    raise StandInError(f"{package} is not pinned in {LOCK.name}")


@dataclass
class StandIn:
    """One image: its public tag, the inputs whose change means a rebuild, and how it is built."""

    name: str
    tag: str
    inputs: Callable[[], Iterable[Path | str]]  # files, folders and strings
    build: Callable[[str, str, Path], None]  # (tag to build, base image, log)
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
        if image_id(self.digest_tag) is None:
            started = time.monotonic()
            log = STATE_DIR / f"stand-in-{self.name}.log"
            progress(f"building the stand-in {self.tag} ({self.digest_tag}); log: {log}")
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text("")
            self.build(self.digest_tag, self.base.digest_tag if self.base else "", log)
            state = f"built ({time.monotonic() - started:.0f} s)"
        else:
            state = "cached"
        if image_id(self.tag) != image_id(self.digest_tag):
            subprocess.run(["docker", "tag", self.digest_tag, self.tag], check=True, capture_output=True)
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


def wheels() -> list[Path]:
    """The torch and nvidia-pytriton wheels of the lock (pip's find-links serve torch's CPU
    build here)."""
    WHEELS.mkdir(parents=True, exist_ok=True)
    found = []
    for name in ("torch", "nvidia-pytriton"):
        pattern = f"{name.replace('-', '_')}-{pinned(name)}*.whl"
        if not list(WHEELS.glob(pattern)):
            command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(WHEELS)]
            result = subprocess.run([*command, f"{name}=={pinned(name)}"], capture_output=True, text=True)
            if result.returncode != 0:
                raise StandInError(f"pip download {name}=={pinned(name)} failed: {result.stderr.strip()[-240:]}")
        found += sorted(WHEELS.glob(pattern))[:1]
    return found


def _tritonserver_files() -> dict[str, Path]:
    files = {f"wheels/{wheel.name}": wheel for wheel in wheels()}
    files |= {f"python/emotion_triton/{module}": PACKAGE / module for module in BACKEND_BUILD_MODULES}
    vendor = {f"vendor/{VENDORED_TRITON.name}": VENDORED_TRITON}
    return files | vendor | {"requirements.lock": LOCK}


def _pytorch_files() -> dict[str, Path]:
    return {f"wheels/{wheel.name}": wheel for wheel in wheels() if wheel.name.startswith("torch-")} | {
        "requirements.lock": LOCK
    }


def _dockerfile(name: str) -> Path:
    return STAND_IN_DIR / f"{name}.Dockerfile"


def _built_from(name: str, files: Callable[[], dict[str, Path]]) -> Callable[[str, str, Path], None]:
    return lambda tag, base, log: docker_build(_dockerfile(name), files(), base, tag, log)


def stand_ins() -> dict[str, StandIn]:
    """The stand-ins by name: debian (the base of the others), tritonserver, pytorch, prometheus."""
    release = ngc_release()
    debian = StandIn(
        "debian",
        f"emotion-triton/stand-in-debian:{DEBIAN_SUITE}",
        lambda: [DEBIAN_SUITE, debian_mirror(), *sorted(EXTRA_CA_DIR.glob("*.crt"))],
        lambda tag, base, log: build_debian_base(tag, DEBIAN_SUITE, log),
    )

    return {
        "debian": debian,
        "tritonserver": StandIn(
            "tritonserver",
            f"nvcr.io/nvidia/tritonserver:{release}-py3",
            lambda: [
                _dockerfile("tritonserver"),
                LOCK,
                VENDORED_TRITON,
                *(PACKAGE / m for m in BACKEND_BUILD_MODULES),
            ],
            _built_from("tritonserver", _tritonserver_files),
            base=debian,
        ),
        "pytorch": StandIn(
            "pytorch",
            f"nvcr.io/nvidia/pytorch:{release}-py3",
            lambda: [_dockerfile("pytorch"), LOCK],
            _built_from("pytorch", _pytorch_files),
            base=debian,
        ),
        "prometheus": StandIn(
            "prometheus",
            compose_image("prometheus"),
            lambda: [_dockerfile("prometheus")],
            _built_from("prometheus", dict),
            base=debian,
        ),
    }


def ensure_stand_ins(names: Iterable[str] | None = None, progress=print) -> dict[str, str]:
    """Builds the stand-ins whose inputs changed and tags them; returns each one's state."""
    images = stand_ins()
    return {name: images[name].ensure(progress) for name in (names or images)}
