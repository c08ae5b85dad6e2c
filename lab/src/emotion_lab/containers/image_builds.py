"""How the stand-in images are built: the Debian base with debootstrap and `docker import`, the others
with `docker build` from a context assembled for them. Every command's output goes to a log."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from emotion_triton.errors import EmotionTritonError

from .engine import STATE_DIR, EngineUnavailable, install_packages

CONTEXTS = STATE_DIR / "stand-in-contexts"
DEBIAN_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
DEBIAN_FALLBACK_MIRROR = "http://deb.debian.org/debian"
# The CAs this machine trusts beyond Debian's own (a TLS-re-signing proxy to the registries): the
# stand-ins trust them too, so the project's Dockerfiles can `pip install` while they are built.
EXTRA_CA_DIR = Path("/usr/local/share/ca-certificates")


class StandInError(EmotionTritonError, RuntimeError):
    """One line: which stand-in could not be built, why, and where the log is."""


def image_id(tag: str) -> str | None:
    result = subprocess.run(["docker", "image", "inspect", "--format={{.Id}}", tag], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def run(command: list[str], log: Path | None = None, progress=None, **kwargs) -> None:
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


def debian_mirror() -> str:
    """This machine's Debian mirror (its apt sources), so the base is made from where apt installs."""
    if DEBIAN_SOURCES.is_file():
        found = re.search(r"^URIs:\s*(\S+)", DEBIAN_SOURCES.read_text(), re.MULTILINE)
        if found:
            return found.group(1)
    return DEBIAN_FALLBACK_MIRROR


def build_debian_base(tag: str, suite: str, log: Path) -> None:
    """A minimal Debian `suite` from this machine's mirror, with its extra CAs, imported as `tag`."""
    if not shutil.which("debootstrap"):  # a fresh machine: installed like the engine
        try:
            install_packages(("debootstrap",), print, "debootstrap", "it")
        except EngineUnavailable as error:
            raise StandInError(str(error)) from None
    with tempfile.TemporaryDirectory(prefix="stand-in-debian-") as work:
        rootfs = Path(work) / "rootfs"
        run(["debootstrap", "--variant=minbase", "--include=ca-certificates", suite, str(rootfs), debian_mirror()], log)
        for certificate in EXTRA_CA_DIR.glob("*.crt"):
            shutil.copyfile(certificate, rootfs / "usr/local/share/ca-certificates" / certificate.name)
        run(["chroot", str(rootfs), "update-ca-certificates"], log)
        # pip bundles its own CAs; this makes it use the system's, the extra ones included.
        (rootfs / "etc/pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")
        shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
        (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        run(["docker", "import", "--change", 'CMD ["/bin/bash"]', "-", tag], log, stdin=tar.stdout)
        if tar.wait() != 0:
            raise StandInError(f"tar of {rootfs} failed (log: {log})")


def docker_build(dockerfile: Path, files: dict[str, Path], base: str, tag: str, log: Path, progress=print) -> None:
    """`docker build` of `dockerfile` FROM `base` in a fresh context holding `files` (a path in the
    context -> a file or folder; files are hard-linked where they can be)."""
    context = CONTEXTS / tag.replace("/", "_").replace(":", "_")
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
    shutil.copyfile(dockerfile, context / "Dockerfile")
    # The classic builder: Debian's docker.io has no buildx, and these contexts need nothing newer.
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    try:
        run(["docker", "build", "--build-arg", f"BASE={base}", "-t", tag, str(context)], log, progress, env=env)
    finally:
        shutil.rmtree(context, ignore_errors=True)
