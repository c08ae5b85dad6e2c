"""The versions of a model repository: where a new build goes, which ones are kept, and which server
serves the repository (a local server's server file, or the tritonserver container named by the
build container's environment). Which version serves is the repository's state
(Ensemble.served_version); this module never changes it by itself."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from .model_config import BUILD_OUTPUTS, KEPT_VERSIONS, SOURCE_VERSION, Ensemble
from .variants import VARIANTS


def next_version(ensemble: Ensemble) -> int:
    """The version a new build installs: one above every version folder and every version installed
    before (SOURCE_VERSION while none is built), recorded at once. A number is never used twice:
    Triton's response cache keys an answer by model name, version and inputs, and kept the answers of
    a removed version for the next one of the same number (seen in the roll-out tests)."""
    if not ensemble.built_versions():
        version = SOURCE_VERSION
    else:
        version = max([ensemble.last_installed_version, *ensemble.versions()]) + 1
    ensemble.record_installed_version(version)
    return version


def remove_version(ensemble: Ensemble, version: int) -> None:
    """Deletes `version` of the tokenizer and the classifier; of SOURCE_VERSION only the build's files
    (its code is the repository's own, kept in git)."""
    for model in ensemble.versioned:
        folder = ensemble.version_dir(model, version)
        if version != SOURCE_VERSION:
            shutil.rmtree(folder, ignore_errors=True)
            continue
        for pattern in BUILD_OUTPUTS:
            for path in folder.glob(pattern):
                shutil.rmtree(path) if path.is_dir() else path.unlink()


def versions_above_served(ensemble: Ensemble) -> list[int]:
    """Version folders above the served one: rolled back from, refused, or left by a killed build."""
    served = ensemble.served_version
    return [version for version in ensemble.versions() if version > served]


def prune(ensemble: Ensemble, keep: int = KEPT_VERSIONS) -> list[int]:
    """Removes the built versions below the served one beyond the `keep` newest (the served one counts);
    returns the versions removed."""
    served = ensemble.served_version
    older = [version for version in ensemble.built_versions() if version < served]
    removed = older[: max(0, len(older) - (keep - 1))]
    for version in removed:
        remove_version(ensemble, version)
    return removed


def server_file(repository: str | Path) -> Path:
    """Where the local server serving `repository` says so: outside the repository (it holds the admin
    key), in the user's runtime folder, one file per repository."""
    runtime = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()) / f"emotion-triton-{os.getuid()}"
    runtime.mkdir(mode=0o700, exist_ok=True)
    key = hashlib.sha256(str(Path(repository).resolve()).encode()).hexdigest()[:16]
    return runtime / f"server-{key}.json"


def write_server_file(repository: str | Path, http_url: str, admin_key: str, pid: int, classifier: str) -> Path:
    """Says that the tritonserver `pid` serves `repository` at `http_url` with the `classifier` variant (readable by its owner only:
    it holds the admin key of the model-control API)."""
    path = server_file(repository)
    descriptor = os.open(path.with_name(path.name + ".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        json.dump({"http_url": http_url, "admin_key": admin_key, "pid": pid, "classifier": classifier}, file)
    os.replace(path.with_name(path.name + ".tmp"), path)
    return path


# docker-compose.yml's build service: the tritonserver container that serves the repository it writes
# (host:port of its HTTP endpoint), the classifier variant it runs, and the restricted APIs' key.
SERVER_VARIABLE, CLASSIFIER_VARIABLE, ADMIN_KEY_VARIABLE = (
    "EMOTION_TRITON_SERVER",
    "EMOTION_TRITON_CLASSIFIER",
    "TRITON_ADMIN_KEY",
)


def serving_server(repository: str | Path) -> dict | None:
    """{"http_url", "admin_key", "classifier"} of the server serving `repository`: the local server of
    its server file ("pid" too), else the container of $EMOTION_TRITON_SERVER when it answers; or None."""
    return local_serving_server(repository) or _container_server()


def _container_server() -> dict | None:
    url = os.environ.get(SERVER_VARIABLE)
    if not url:
        return None
    from ..triton_http import TritonHTTPError, session  # tritonclient.http: only when a container is named

    try:  # not up (the build before the first `up`): the build's version is the served one
        with session(url, timeout=5) as triton:
            if not triton.is_server_live():
                return None
    except TritonHTTPError:
        return None
    classifier = os.environ.get(CLASSIFIER_VARIABLE, "")
    if classifier not in VARIANTS:
        raise ValueError(
            f"${CLASSIFIER_VARIABLE} must name the served classifier variant ({', '.join(VARIANTS)}), not {classifier!r}"
        )
    return {"http_url": url, "admin_key": os.environ.get(ADMIN_KEY_VARIABLE, ""), "classifier": classifier}


def local_serving_server(repository: str | Path) -> dict | None:
    """The local server's server file, or None (no file, or its process is gone: a server killed without
    its stop leaves the file behind)."""
    path = server_file(repository)
    try:
        server = json.loads(path.read_text())
        os.kill(int(server["pid"]), 0)
    except ProcessLookupError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return server
