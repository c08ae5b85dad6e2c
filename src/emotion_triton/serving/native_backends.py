"""Triton's native CPU backend, built from NVIDIA's sources against the pinned wheel: the PyTorch
(libtorch) backend against torch's libraries.

    python -m emotion_triton.serving.native_backends        (`make setup` runs it)
    python -m emotion_triton.serving.native_backends --sources DIR --cache DIR --install-to DIR
                                                            (the stand-in tritonserver image's build stage)

The tritonserver of the nvidia-pytriton wheel ships only the Python backend; the production
classifier (`platform: "pytorch_libtorch"`) and its CPU twin need `libtriton_pytorch.so`. NVIDIA's sources of the wheel
server's release are built once and cached under `.venv/`, keyed by the runtime wheel's version and
the sources: `../shared/vendor/triton-r24.10` when it exists, otherwise a clone of the release branch
from GitHub (CMake then fetches its dependencies the same way). A build that cannot run or fails
says why in one line; the Python-backend classifiers need none of it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from ..errors import EmotionTritonError
from ..paths import PROJECT_ROOT, SHARED_DIR

RELEASE = "r24.10"  # the release of the wheel's tritonserver 2.51 (NGC 24.10)
VENDORED_SOURCES = SHARED_DIR / "vendor" / f"triton-{RELEASE}"
GITHUB = "https://github.com/triton-inference-server/{}.git"
CACHE = PROJECT_ROOT / ".venv" / "triton-backends"


class BackendBuildError(EmotionTritonError, RuntimeError):
    """One line: why a native backend cannot be built, and what to install or run."""


def torch_dir() -> Path:
    import torch

    return Path(torch.__file__).parent


@dataclass(frozen=True)
class NativeBackend:
    """One of Triton's C++ backends: what to build and what it needs beside it at run time."""

    name: str  # its folder under the server's backend directory, and its --backend value
    title: str
    repository: str  # triton-inference-server/<repository>, the folder of the vendored sources
    target: str  # the CMake target
    library: str
    runtime: str  # the pinned wheel whose shared libraries it links

    def configure_options(self) -> list[str]:
        torch = torch_dir()
        return [
            "-DTRITON_PYTORCH_ENABLE_TORCHVISION=OFF",
            f"-DTRITON_PYTORCH_INCLUDE_PATHS={torch / 'include'};{torch / 'include/torch/csrc/api/include'}",
            f"-DTRITON_PYTORCH_LIB_PATHS={torch / 'lib'}",
        ]

    def _key(self, sources: Path | None) -> str:
        digest = hashlib.sha256(f"{self.name} {self.runtime} {metadata.version(self.runtime)} {RELEASE}".encode())
        for folder in [sources] if sources is not None else []:
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                digest.update(str(path.relative_to(folder)).encode())
                digest.update(path.read_bytes())
        return digest.hexdigest()[:16]

    def built_library(self, sources: Path | None = None, cache: Path | None = None) -> Path | None:
        """The cached library for the installed runtime wheel and these sources, if it was built."""
        library = (cache or CACHE) / self.name / self._key(_vendored(sources)) / self.library
        return library if library.is_file() else None

    def ensure(self, progress=print, sources: Path | None = None, cache: Path | None = None) -> Path:
        """The path of the backend's library, built first if the cache has none; raises BackendBuildError.

        `sources`: NVIDIA's sources (default: the vendored copy beside the checkout, else GitHub);
        `cache`: where built libraries are kept (default: in .venv/)."""
        vendored = _vendored(sources)
        library = self.built_library(vendored, cache)
        if library is not None:
            return library
        missing = missing_tools(need_git=vendored is None)
        if missing:
            raise BackendBuildError(
                f"{self.title} cannot be built: missing {', '.join(missing)}; "
                "on Debian: apt-get install cmake g++ rapidjson-dev googletest git"
            )
        target = (cache or CACHE) / self.name / self._key(vendored)
        work = target / "build"
        shutil.rmtree(target, ignore_errors=True)
        work.mkdir(parents=True)
        log = target / "build.log"
        with open(log, "w") as output:
            sources = vendored or self._clone(target / "sources", output, log)
            progress(f"building {self.title} ({RELEASE}, CPU) from {sources}; log: {log}")
            configure = self._configure_command(sources, work, vendored is not None)
            self._run(configure, output, log, "configuring")
            build = ["cmake", "--build", str(work), "--target", self.target, f"-j{os.cpu_count() or 1}"]
            self._run(build, output, log, "compiling", progress)
        shutil.copyfile(work / self.library, target / self.library)
        shutil.rmtree(work, ignore_errors=True)  # objects: several hundred MB
        progress(f"built {target / self.library}")
        return target / self.library

    def _clone(self, target: Path, output, log: Path) -> Path:
        url = GITHUB.format(self.repository)
        self._run(["git", "clone", "--depth=1", f"--branch={RELEASE}", url, str(target)], output, log, f"cloning {url}")
        return target

    def _configure_command(self, sources: Path, work: Path, vendored: bool) -> list[str]:
        command = [
            "cmake",
            "-S",
            str(sources / self.repository if vendored else sources),
            "-B",
            str(work),
            "-DCMAKE_BUILD_TYPE=Release",
            "-DTRITON_ENABLE_GPU=OFF",
            *self.configure_options(),
            f"-DTRITON_COMMON_REPO_TAG={RELEASE}",
            f"-DTRITON_CORE_REPO_TAG={RELEASE}",
            f"-DTRITON_BACKEND_REPO_TAG={RELEASE}",
            # common's unit tests are always configured and fetch googletest: use Debian's copy.
            "-DFETCHCONTENT_SOURCE_DIR_GOOGLETEST=/usr/src/googletest",
            f"-DPython3_INCLUDE_DIR={sysconfig.get_paths()['include']}",
            f"-DPython3_EXECUTABLE={sys.executable}",
        ]
        if vendored:  # offline: point FetchContent at the vendored copies of the same tags
            command += [
                f"-DFETCHCONTENT_SOURCE_DIR_REPO-{name.upper()}={sources / name}"
                for name in ("common", "core", "backend")
            ]
        return command

    def _run(self, command: list[str], output, log: Path, stage: str, progress=None) -> None:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        shown = -10
        for line in process.stdout:
            output.write(line)
            percent = re.match(r"\[\s*(\d+)%\]", line)
            if progress and percent and int(percent.group(1)) >= shown + 10:
                shown = int(percent.group(1))
                progress(f"  {shown}%")
        if process.wait() != 0:
            output.flush()
            raise BackendBuildError(f"{self.title} failed while {stage}: {_first_error(log)} (log: {log})")


PYTORCH = NativeBackend(
    "pytorch", "Triton's PyTorch backend", "pytorch_backend", "triton-pytorch-backend", "libtriton_pytorch.so", "torch"
)
BACKENDS = {PYTORCH.name: PYTORCH}


def _vendored(sources: Path | None) -> Path | None:
    sources = sources if sources is not None else VENDORED_SOURCES
    return sources if sources.is_dir() else None


def missing_tools(need_git: bool) -> list[str]:
    """What the build needs and this machine lacks, as '<what> (<Debian package>)'."""
    include = Path(sysconfig.get_paths()["include"])
    checks = [
        (shutil.which("cmake"), "cmake (cmake)"),
        (shutil.which("c++") or shutil.which("g++"), "a C++17 compiler (g++)"),
        (Path("/usr/include/rapidjson/document.h").is_file(), "RapidJSON headers (rapidjson-dev)"),
        (Path("/usr/src/googletest/CMakeLists.txt").is_file(), "googletest sources (googletest)"),
        ((include / "Python.h").is_file(), f"Python headers in {include} (python3-dev)"),
    ]
    if need_git:
        checks.append((shutil.which("git"), "git (git)"))
    return [what for present, what in checks if not present]


def _first_error(log: Path) -> str:
    """The first error line of the log, with the line after it when it ends in ':' (CMake's style)."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    for index, line in enumerate(lines):
        if re.search(r"error|Could not|fatal", line, re.IGNORECASE):
            if line.endswith(":") and index + 1 < len(lines):
                line = f"{line} {lines[index + 1]}"
            return line[:240]
    return "see the log"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build Triton's native CPU backend (cached).")
    parser.add_argument("--backend", choices=sorted(BACKENDS), action="append", help="default: every backend")
    parser.add_argument("--sources", type=Path, help=f"NVIDIA's {RELEASE} sources (default: {VENDORED_SOURCES})")
    parser.add_argument("--cache", type=Path, help=f"where built libraries are kept (default: {CACHE})")
    parser.add_argument(
        "--install-to", type=Path, help="also copy each backend, with the files it loads, into <folder>/<backend>/"
    )
    args = parser.parse_args(argv)
    failed = 0
    for name in args.backend or BACKENDS:
        backend = BACKENDS[name]
        try:
            library = backend.ensure(sources=args.sources, cache=args.cache)
        except BackendBuildError as error:
            print(f"warning: {error}", file=sys.stderr)
            failed += 1
            continue
        if args.install_to:
            folder = args.install_to / backend.name
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(library, folder / backend.library)
    if failed:
        print("the Python-backend classifiers (make serve CLASSIFIER=onnx) still work without it", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
