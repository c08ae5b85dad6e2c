"""The Dockerfiles read as docker reads them (the `dockerfile` parser): instructions, ENV, the packages
pip installs, COPY destinations, .dockerignore files, the user a container runs as; and what a
Python file imports and what an extra of pyproject.toml installs, to compare them with an image."""

from __future__ import annotations

import ast
import re
import shlex
import sys
from pathlib import Path

import dockerfile
import tomllib

from emotion_lab.containers.stand_ins import STAND_IN_DIR
from tests.helpers.deploy_files import ROOT, SERVING_DOCKERFILE


def dockerfile_instructions(path: Path) -> list[tuple[str, tuple[str, ...], bool]]:
    return [(c.cmd.upper(), c.value, c.json) for c in dockerfile.parse_file(str(path))]


def dockerfile_value(path: Path, instruction: str) -> tuple[str, ...]:
    values = [value for cmd, value, _ in dockerfile_instructions(path) if cmd == instruction]
    assert values, f"{path.name} has no {instruction}"
    return values[-1]


def dockerfile_env(path: Path) -> dict[str, str]:
    env = {}
    for cmd, value, _ in dockerfile_instructions(path):
        if cmd == "ENV":
            env.update(zip(value[::2], value[1::2], strict=True))
    return env


def pip_packages(path: Path) -> set[str]:
    """Requirement names of the `pip install` commands of a Dockerfile's RUN instructions."""
    names = set()
    for cmd, value, _ in dockerfile_instructions(path):
        if cmd != "RUN":
            continue
        for segment in " ".join(value).split("&&"):
            words = shlex.split(segment)
            if "install" not in words or "pip" not in words:
                continue
            words = words[words.index("install") + 1 :]
            skip = False
            for word in words:
                if skip:
                    skip = False
                elif word in ("-c", "-r", "--constraint", "--requirement"):
                    skip = True
                elif not word.startswith("-"):
                    names.add(canonical(re.split(r"[\[=<>]", word)[0]))
    return names


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[canonical(name.strip())] = version.strip()
    return pins


def third_party_imports(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
    return {m for m in modules if m not in sys.stdlib_module_names and m not in ("__future__", "emotion_triton")}


def container_copy(source: str) -> str:
    """Where the serving image has a file of this repository (its COPY destination)."""
    copies = [value for cmd, value, _ in dockerfile_instructions(SERVING_DOCKERFILE) if cmd == "COPY"]
    (destination,) = [dest for src, dest in copies if src == source]
    return destination


def extra_requirements(extra: str) -> set[str]:
    """The distributions an install with an extra of pyproject.toml gets: the package's own
    dependencies, the extra's, and those of the extras it names."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {canonical(re.match(r"[A-Za-z0-9_.-]+", requirement).group()) for requirement in project["dependencies"]}
    for requirement in project["optional-dependencies"][extra]:
        name, _, nested = re.match(r"([A-Za-z0-9_.-]+)(\[([^\]]+)\])?", requirement).groups()[0:3]
        if canonical(name) == "emotion-triton":
            names |= set().union(*(extra_requirements(e.strip()) for e in nested.split(",")))
        else:
            names.add(canonical(name))
    return names


def dockerignore(path: Path) -> list[str]:
    lines = Path(f"{path}.dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def stand_in_dockerfile(image_file: Path) -> Path:
    """docker/stand-in/'s copy of the base image (nvcr.io/nvidia/<name>:...) of one of the project's Dockerfiles."""
    (base,) = dockerfile_value(image_file, "FROM")
    return STAND_IN_DIR / f"{base.rsplit('/', 1)[-1].split(':')[0]}.Dockerfile"


def image_user(image_file: Path, user: str | None = None) -> str:
    """uid:gid of a container of the image run as `user` (a name or uid, with or without a group), by default
    as the image's USER, else its base image's, else root. Names and groups are those the stand-in of the
    base image creates, as NVIDIA's image does (triton-server: uid and gid 1000; tests/deployment/test_containers.py
    sees it in the running container)."""
    stand_in = stand_in_dockerfile(image_file)
    if user is None:
        users = [
            value[0]
            for path in (stand_in, image_file)
            for cmd, value, _ in dockerfile_instructions(path)
            if cmd == "USER"
        ]
        user = users[-1] if users else "root"
    accounts = {"root": ("0", "0")}
    for cmd, value, _ in dockerfile_instructions(stand_in):
        for options in re.findall(r"\buseradd\s+([^;&|]+)", " ".join(value)) if cmd == "RUN" else []:
            words = shlex.split(options)
            assert "--uid" in words and "--user-group" in words, (
                f"{stand_in.name}: useradd {options}: which uid and gid?"
            )
            uid = words[words.index("--uid") + 1]
            accounts[words[-1]] = (uid, uid)
    accounts.update({uid: (uid, gid) for uid, gid in list(accounts.values())})
    name, _, group = user.partition(":")
    assert name in accounts or name.isdigit(), f"{image_file.name}: user {name} is not in {stand_in.name}: which uid?"
    uid, gid = accounts.get(name, (name, "0"))  # docker: a uid without an account runs with gid 0
    return f"{uid}:{accounts.get(group, (group, group))[1] if group else gid}"
