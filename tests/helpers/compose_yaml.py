"""The compose files as Compose reads them, without a Docker engine: a YAML loader with compose's merge
tags, the merge of an override file, ${VAR:-default} interpolation and durations, the compose
specification's schema, and the real Compose v2's merged model (`docker compose config`)."""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import importlib.util
import json
import os
import re
import subprocess
from pathlib import Path

import yaml

from emotion_lab.containers.engine import compose_binary
from tests.helpers.deploy_files import ROOT


def interpolate(value):
    """docker compose's ${VAR:-default} / ${VAR} with no variable set, recursively."""
    if isinstance(value, str):
        return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: m.group(2) or "", value)
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    return value


def seconds(duration: str) -> float:
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert parts and duration, f"not a compose duration: {duration!r}"
    hours, minutes, secs = (int(p or 0) for p in parts.groups())
    return hours * 3600 + minutes * 60 + secs


class Reset:
    """compose's `!reset` tag: removes the attribute from the merged model."""


class Override:
    """compose's `!override` tag: replaces the attribute instead of merging it."""

    def __init__(self, value):
        self.value = value


class ComposeLoader(yaml.SafeLoader):
    """YAML with compose's merge tags."""


def _construct_tag(cls):
    def construct(loader, node):
        if isinstance(node, yaml.MappingNode):
            value = loader.construct_mapping(node, deep=True)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_scalar(node)
        return Reset() if cls is Reset else Override(value)

    return construct


ComposeLoader.add_constructor("!reset", _construct_tag(Reset))


ComposeLoader.add_constructor("!override", _construct_tag(Override))


def load_compose(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=ComposeLoader)  # SafeLoader plus two tags


def _untagged(value):
    if isinstance(value, Override):
        return _untagged(value.value)
    if isinstance(value, dict):
        return {k: _untagged(v) for k, v in value.items() if not isinstance(v, Reset)}
    if isinstance(value, list):
        return [_untagged(v) for v in value if not isinstance(v, Reset)]
    return value


def merge_compose(base, override, path: tuple = ()):
    """`docker compose -f base -f override`, by the compose specification's merge rules: mappings
    merge, sequences append (unique entries), command / entrypoint / healthcheck.test are replaced,
    `!reset` removes and `!override` replaces."""
    if isinstance(override, Override):
        return _untagged(override.value)
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            if isinstance(value, Reset):
                merged.pop(key, None)
            elif key in base:
                merged[key] = merge_compose(base[key], value, (*path, key))
            else:
                merged[key] = _untagged(value)
        return merged
    if isinstance(base, list) and isinstance(override, list):
        replaced = path[-1:] in (("command",), ("entrypoint",)) or path[-2:] == ("healthcheck", "test")
        if replaced:
            return _untagged(override)
        return base + [v for v in _untagged(override) if v not in base]
    return _untagged(override)


def gpu_requests(value, where: str = "") -> list[str]:
    """Every place of a compose model that asks for a GPU."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{where}/{key}"
            if key == "gpus" or (key == "runtime" and item == "nvidia"):
                found.append(here)
            elif key == "devices" and isinstance(item, list):
                found += [
                    here
                    for d in item
                    if isinstance(d, dict) and ("gpu" in d.get("capabilities", []) or d.get("driver") == "nvidia")
                ]
            else:
                found += gpu_requests(item, here)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += gpu_requests(item, f"{where}/{index}")
    return found


def compose_schema() -> dict:
    vendored = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    return json.loads(vendored.read_text())


# What TRITON_ADMIN_KEY holds when the operator gives a key: compose's host variable, the Secret.
OPERATOR_SECRET = "<the operator's secret>"


def compose_config(*files: Path) -> dict:
    """The model `docker compose -f ... config` prints: Compose v2's own merge, interpolation and
    normalisation (no engine needed). Every ${VAR:-default} at its default but TRITON_ADMIN_KEY, the
    operator's; no .env file."""
    command = [str(compose_binary()), "--project-directory", str(ROOT), "--env-file", os.devnull]
    command += [option for path in files for option in ("-f", str(path))]
    result = subprocess.run(
        [*command, "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ.get("PATH", ""), "TRITON_ADMIN_KEY": OPERATOR_SECRET},
    )
    assert result.returncode == 0, f"docker compose config: {result.stderr}"
    return json.loads(result.stdout)
