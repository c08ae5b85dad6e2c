"""Triton's PyTorch (libtorch) backend, built from source for the CPU against the pinned torch.

    python -m emotion_triton.serving.pytorch_backend        (`make setup` runs it)
    python -m emotion_triton.serving.pytorch_backend --sources DIR --cache DIR --install-to DIR
                                                            (the stand-in tritonserver image's build stage)

The tritonserver of the nvidia-pytriton wheel ships only the Python backend; the production
classifier (`platform: "pytorch_libtorch"`) needs `libtriton_pytorch.so`. NVIDIA's sources of
the wheel server's release are built once and cached under `.venv/`, keyed by the torch
version and the sources: `../shared/vendor/triton-r24.10` when it exists, otherwise a clone of
the release branch from GitHub (CMake then fetches its dependencies the same way). A build
that cannot run or fails says why in one line; the Python-backend classifier needs none of it.
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
from pathlib import Path

from ..paths import PROJECT_ROOT, SHARED_DIR

RELEASE = "r24.10"  # the release of the wheel's tritonserver 2.51 (NGC 24.10)
VENDORED_SOURCES = SHARED_DIR / "vendor" / f"triton-{RELEASE}"
GITHUB = "https://github.com/triton-inference-server/{}.git"
CACHE = PROJECT_ROOT / ".venv" / "triton-pytorch-backend"
LIBRARY = "libtriton_pytorch.so"


class BackendBuildError(RuntimeError):
    """One line: why the PyTorch backend cannot be built, and what to install or run."""


def torch_dir() -> Path:
    import torch

    return Path(torch.__file__).parent


def _sources_key(sources: Path | None) -> str:
    import torch

    digest = hashlib.sha256(f"{torch.__version__} {torch_dir()} {RELEASE}".encode())
    if sources is not None:
        for path in sorted(p for p in sources.rglob("*") if p.is_file()):
            digest.update(str(path.relative_to(sources)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _vendored(sources: Path | None) -> Path | None:
    sources = sources if sources is not None else VENDORED_SOURCES
    return sources if sources.is_dir() else None


def built_library(sources: Path | None = None, cache: Path | None = None) -> Path | None:
    """The cached library for the installed torch and these sources, if it was built."""
    library = (cache or CACHE) / _sources_key(_vendored(sources)) / LIBRARY
    return library if library.is_file() else None


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


def ensure_backend(progress=print, sources: Path | None = None, cache: Path | None = None) -> Path:
    """The path of libtriton_pytorch.so, built first if the cache has none; raises BackendBuildError.

    `sources`: NVIDIA's sources (default: the vendored copy beside the checkout, else GitHub);
    `cache`: where built libraries are kept (default: in .venv/)."""
    vendored = _vendored(sources)
    library = built_library(vendored, cache)
    if library is not None:
        return library
    missing = missing_tools(need_git=vendored is None)
    if missing:
        raise BackendBuildError(
            f"Triton's PyTorch backend cannot be built: missing {', '.join(missing)}; "
            "on Debian: apt-get install cmake g++ rapidjson-dev googletest git"
        )
    target = (cache or CACHE) / _sources_key(vendored)
    work = target / "build"
    shutil.rmtree(target, ignore_errors=True)
    work.mkdir(parents=True)
    log = target / "build.log"
    with open(log, "w") as output:
        sources = vendored or _clone(target / "sources", output, log)
        progress(f"building Triton's PyTorch backend ({RELEASE}, CPU) from {sources}; log: {log}")
        _run(_configure_command(sources, work, vendored is not None), output, log, "configuring")
        _run(
            ["cmake", "--build", str(work), "--target", "triton-pytorch-backend", f"-j{os.cpu_count() or 1}"],
            output,
            log,
            "compiling",
            progress,
        )
    shutil.copyfile(work / LIBRARY, target / LIBRARY)
    shutil.rmtree(work, ignore_errors=True)  # objects: several hundred MB
    progress(f"built {target / LIBRARY}")
    return target / LIBRARY


def _clone(target: Path, output, log: Path) -> Path:
    url = GITHUB.format("pytorch_backend")
    _run(["git", "clone", "--depth=1", f"--branch={RELEASE}", url, str(target)], output, log, f"cloning {url}")
    return target


def _configure_command(sources: Path, work: Path, vendored: bool) -> list[str]:
    torch = torch_dir()
    command = [
        "cmake",
        "-S",
        str(sources / "pytorch_backend" if vendored else sources),
        "-B",
        str(work),
        "-DCMAKE_BUILD_TYPE=Release",
        "-DTRITON_ENABLE_GPU=OFF",
        "-DTRITON_PYTORCH_ENABLE_TORCHVISION=OFF",
        f"-DTRITON_PYTORCH_INCLUDE_PATHS={torch / 'include'};{torch / 'include/torch/csrc/api/include'}",
        f"-DTRITON_PYTORCH_LIB_PATHS={torch / 'lib'}",
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
            f"-DFETCHCONTENT_SOURCE_DIR_REPO-{name.upper()}={sources / name}" for name in ("common", "core", "backend")
        ]
    return command


def _run(command: list[str], output, log: Path, stage: str, progress=None) -> None:
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
        raise BackendBuildError(f"Triton's PyTorch backend failed while {stage}: {_first_error(log)} (log: {log})")


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
    parser = argparse.ArgumentParser(description="Build Triton's PyTorch backend for the CPU (cached).")
    parser.add_argument("--sources", type=Path, help=f"NVIDIA's {RELEASE} sources (default: {VENDORED_SOURCES})")
    parser.add_argument("--cache", type=Path, help=f"where built libraries are kept (default: {CACHE})")
    parser.add_argument("--install-to", type=Path, help="also copy the library into this folder")
    args = parser.parse_args(argv)
    try:
        library = ensure_backend(sources=args.sources, cache=args.cache)
    except BackendBuildError as error:
        print(f"warning: {error}", file=sys.stderr)
        print("the Python-backend classifier (make serve) still works without it", file=sys.stderr)
        return 1
    if args.install_to:
        args.install_to.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(library, args.install_to / LIBRARY)
    return 0


if __name__ == "__main__":
    sys.exit(main())
