"""A checked roll-out of a new model version on a running server (local or container), and the rollback: through
Triton's model-control API (model control mode `explicit`, the `admin-key` header).

A version serves when the repository's state pins it (Ensemble.served_version: the ensemble's derived
configs, which the server loads, carry the pin); the tokenizer's and the
classifier's configs load the two newest version folders (`version_policy: latest 2`). A roll-out:

1. loads the ensemble again: Triton re-reads the steps' folders and loads the new version beside the
   served one, which keeps serving (a load that fails leaves the loaded models as they were);
2. checks the new version through the server, step by step at that version (the ensemble still
   serves the old one): the canary text, then the build report's validation sample, whose accuracy
   must be the eager model's within the report's tolerance;
3. pins the new version and loads the ensemble again: the new ensemble takes the next requests,
   the old one finishes those it has (no request lost: tests/integration/test_rollout.py);
4. checks that the server runs the new pin and answers the canary, then removes the versions beyond
   KEPT_VERSIONS.

A refused version is removed from the repository and the server loads the served versions again; the
error says why in one line. A rollback pins the version before the served one (still loaded).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import np_to_triton_dtype

from .. import triton_http
from ..errors import EmotionTritonError
from ..repository import DEFAULT_CLASSIFIER, Ensemble
from ..repository.versions import SERVER_VARIABLE, prune, remove_version, serving_server, versions_above_served
from . import canary
from .local_server import compile_model_code
from .preflight import ServerError, check_built_model
from .tritonserver_flags import ADMIN_HEADER

Answer = TypeVar("Answer")
LOAD_TIMEOUT = 300.0  # seconds a load request may take (a real model loads in seconds; a busy host is slower)


class RolloutError(EmotionTritonError):
    """Why a roll-out or a rollback did not happen, in one line; the served version is unchanged."""


class RolloutRefused(RolloutError):
    """The new version failed its checks (load, canary, accuracy) and was removed."""


@dataclass(frozen=True)
class ServerControl:
    """The model-control and inference endpoints of one tritonserver (HTTP, with its admin key)."""

    http_url: str  # host:port
    admin_key: str
    classifier: str = DEFAULT_CLASSIFIER  # the classifier variant it runs (VARIANTS)

    @classmethod
    def serving(cls, repository: str | Path) -> ServerControl:
        """The server serving `repository`: the local server of the file it writes there while it runs,
        or in the build container the tritonserver container its environment names."""
        server = serving_server(repository)
        if server is None:
            raise RolloutError(
                f"no server serves {repository} (no running local server, no answer from "
                f"${SERVER_VARIABLE}): start it with `make serve` or `docker compose up -d tritonserver`"
            )
        return cls(server["http_url"], server["admin_key"], server.get("classifier", DEFAULT_CLASSIFIER))

    def _call(
        self, path: str, request: Callable[[httpclient.InferenceServerClient, dict], Answer], timeout: float = 30.0
    ) -> Answer:
        """`request(client, headers)` on the server (triton_http: tritonclient.http), the headers holding its
        admin key (the model-repository API is restricted to it); raises RolloutError, naming `path`."""
        try:
            with triton_http.session(self.http_url, timeout, path) as triton:
                return request(triton, {ADMIN_HEADER: self.admin_key})
        except triton_http.TritonHTTPError as error:
            hint = " (is the admin key the server's TRITON_ADMIN_KEY?)" if error.status == 403 else ""
            raise RolloutError(f"{error}{hint}") from None

    def load(self, model: str) -> None:
        """Loads `model` again (an ensemble: its steps whose folders changed too); raises RolloutError."""
        path = f"/v2/repository/models/{model}/load"
        self._call(path, lambda triton, headers: triton.load_model(model, headers=headers), LOAD_TIMEOUT)

    def is_ready(self) -> bool:
        """The server's strict readiness (/v2/health/ready answers 200); False without an answer."""
        try:
            return self._call("/v2/health/ready", lambda triton, headers: triton.is_server_ready(headers=headers), 2.0)
        except RolloutError:
            return False

    def version_states(self, model: str) -> dict[int, str]:
        """version -> "READY", or the state and Triton's reason (a version that failed to load says why)."""
        index = self._call(
            "/v2/repository/index", lambda triton, headers: triton.get_model_repository_index(headers=headers)
        )
        return {
            int(m["version"]): m.get("state", "")
            if m.get("state") == "READY"
            else f"{m.get('state')}: {m.get('reason')}"
            for m in index
            if m.get("name") == model and m.get("version")
        }

    def wait_until_settled(self, ensemble: Ensemble, ready: bool = True, timeout: float = LOAD_TIMEOUT) -> None:
        """Until the server runs exactly the versions the repository's folders say (the two newest), none
        is still unloading, and it is ready. Requests are answered meanwhile, but its strict readiness
        (/v2/health/ready) is 400 while a dropped version unloads (about 3 s, measured), and Triton
        unloads after the load request has returned. `ready=False`: not the readiness (after a version
        that failed to load in Triton, which leaves it false)."""
        expected = set(ensemble.versions()[-2:])
        deadline = time.monotonic() + timeout
        while True:
            states = {model: self.version_states(model) for model in ensemble.versioned}
            settled = all(
                {v for v, state in versions.items() if state == "READY"} == expected
                and not any(state.startswith("UNLOADING") for state in versions.values())
                for versions in states.values()
            )
            if settled and (not ready or self.is_ready()):
                return
            if time.monotonic() > deadline:
                raise RolloutError(
                    f"the server has not settled on versions {sorted(expected)} after {timeout:g} s: {states}"
                )
            time.sleep(0.1)

    def ready_versions(self, model: str) -> set[int]:
        return {version for version, state in self.version_states(model).items() if state == "READY"}

    def pins(self, ensemble: str) -> dict[str, int]:
        """The loaded ensemble's step -> model_version."""
        path = f"/v2/models/{ensemble}/config"
        config = self._call(path, lambda triton, headers: triton.get_model_config(ensemble, headers=headers))
        return {s["model_name"]: int(s.get("model_version", -1)) for s in config["ensemble_scheduling"]["step"]}

    def infer(self, model: str, version: int | None, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One inference on `model` (at `version`, or its default): output name -> tensor."""
        at = str(version) if version and version > 0 else ""
        path = f"/v2/models/{model}" + (f"/versions/{at}" if at else "") + "/infer"

        def request(triton: httpclient.InferenceServerClient, headers: dict) -> dict[str, np.ndarray]:
            tensors = []
            for name, array in inputs.items():
                tensors.append(httpclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype)))
                tensors[-1].set_data_from_numpy(array)
            result = triton.infer(model, tensors, model_version=at, headers=headers)
            return {output["name"]: result.as_numpy(output["name"]) for output in result.get_response()["outputs"]}

        return self._call(path, request)


def classify_at_version(
    control: ServerControl, ensemble: Ensemble, version: int, texts: list[str]
) -> tuple[list[str], list[list[float]]]:
    """(labels, scores) of `texts` through the server, the ensemble's steps called one by one with the
    versioned steps at `version`: the answers the ensemble gives once it pins `version`."""
    config = ensemble.config(ensemble.name)
    labels: list[str] = []
    scores: list[list[float]] = []
    for begin in range(0, len(texts), config.max_batch_size):
        batch = texts[begin : begin + config.max_batch_size]
        tensors = {config.input[0].name: np.array(batch, dtype=np.object_).reshape(-1, 1)}
        for step in config.ensemble_scheduling.step:
            at = version if step.model_name in ensemble.versioned else step.model_version
            inputs = {key: tensors[value] for key, value in step.input_map.items()}
            outputs = control.infer(step.model_name, at, inputs)
            tensors.update({value: outputs[key] for key, value in step.output_map.items()})
        label, score = (output.name for output in config.output)
        labels += [value.decode() for value in tensors[label].reshape(-1)]
        scores += tensors[score].tolist()
    return labels, scores


def check_version(control: ServerControl, ensemble: Ensemble, version: int) -> str:
    """The version's canary and its validation sample through the server; raises RolloutRefused.
    Returns what it measured, in one line."""
    try:
        report = ensemble.report(version)
    except (OSError, ValueError) as error:
        raise RolloutRefused(f"version {version} has no readable build report: {error}") from None
    sample = report.get("rollout_check")
    if not sample:
        raise RolloutRefused(
            f"version {version}'s build report has no validation sample to check it on (built without --data)"
        )
    names = ensemble.labels
    label, scores = classify_at_version(control, ensemble, version, [canary.CANARY_TEXT])
    if label[0] not in names or abs(sum(scores[0]) - 1) > 1e-3 or not all(map(math.isfinite, scores[0])):
        raise RolloutRefused(f"version {version} answered its canary with {label[0]!r} {scores[0]}")
    served_labels, _ = classify_at_version(control, ensemble, version, sample["texts"])
    accuracy = sum(a == b for a, b in zip(served_labels, sample["labels"], strict=True)) / len(served_labels)
    points = 100 * (accuracy - sample["accuracy"])
    measured = (
        f"{100 * accuracy:.1f}% on its {len(served_labels)}-text validation sample through the server, "
        f"{100 * sample['accuracy']:.1f}% in its build report (tolerance {sample['tolerance_points']:g} points)"
    )
    if abs(points) > sample["tolerance_points"]:
        raise RolloutRefused(f"version {version} scored {measured}")
    return measured


def _pin_running_version(control: ServerControl, ensemble: Ensemble) -> None:
    """An unpinned ensemble (-1, the checkout's config.pbtxt) runs the newest version the server has loaded; a
    roll-out must not let the next load route it to the new one unchecked: pin the running one."""
    if ensemble.pinned_version() > 0:
        return
    running = control.ready_versions(ensemble.classifier) & control.ready_versions(ensemble.tokenizer)
    if not running:
        raise RolloutError(f"the server has no version of {ensemble.classifier} and {ensemble.tokenizer} ready")
    ensemble.set_served_version(max(running))


def _switch(control: ServerControl, ensemble: Ensemble, version: int) -> None:
    """Pins `version` and loads the ensemble with it; the old pin again if that fails."""
    served = ensemble.served_version
    ensemble.set_served_version(version)
    try:
        control.load(ensemble.name)
        pins = control.pins(ensemble.name)
        if {pins[model] for model in ensemble.versioned} != {version}:
            raise RolloutError(f"the server still runs pins {pins} after loading the ensemble")
    except RolloutError:
        ensemble.set_served_version(served)
        control.load(ensemble.name)
        raise
    # The canary's inference only: /v2/health/ready answers 400 while the old versions unload (about
    # 3 s with the strict readiness the server runs), though every request is answered meanwhile.
    try:
        canary.infer(f"http://{control.http_url}", ensemble.name, timeout=30.0)
    except canary.Unhealthy as error:
        raise RolloutError(f"version {version} serves but the canary failed: {error}") from None


def roll_out(repository: str | Path, version: int | None = None, log: Callable[[str], None] = print) -> tuple[int, int]:
    """Checks `version` (default: the newest above the served one) on the server serving `repository`
    and makes it the served one: (old version, new version). Raises RolloutRefused (the version failed
    its checks and was removed) or RolloutError (nothing changed)."""
    control = ServerControl.serving(repository)
    ensemble = Ensemble.read(repository)
    _pin_running_version(control, ensemble)
    served = ensemble.served_version
    candidates = versions_above_served(ensemble)
    version = version if version is not None else max(candidates, default=None)
    if version is None or version not in candidates:
        raise RolloutError(
            f"no version above the served version {served} to roll out in {repository}"
            + (f" (version {version} is not one)" if version is not None else "")
        )
    # Only the two newest folders load: the others above the served version (rolled back from, or
    # refused) would push the served one out of the server.
    for other in candidates:
        if other != version:
            remove_version(ensemble, other)
            log(f"removed version {other} (above the served version {served}, not rolled out)")
    started = time.monotonic()
    try:
        # The files first, in this process: Triton 2.51 keeps a version that failed to load in its model
        # list, and its strict readiness stays false until that model loads again with a change.
        try:
            check_built_model(ensemble, control.classifier, version)
        except ServerError as error:
            raise RolloutRefused(f"version {version} cannot be loaded: {error}") from None
        compile_model_code(ensemble.repository)
        try:
            control.load(ensemble.name)  # the new version loads beside the served one
        except RolloutError as error:
            raise RolloutRefused(f"version {version} did not load: {error}") from None
        # A version that fails to load does not fail the load request: the other versions load.
        for model in ensemble.versioned:
            states = control.version_states(model)
            if states.get(version) != "READY":
                reason = " ".join(str(states.get(version, "not loaded")).split())[:300]
                raise RolloutRefused(f"version {version} did not load: {model} {reason}")
            if states.get(served) != "READY":
                raise RolloutError(f"the served version {served} of {model} is not ready: {states.get(served)}")
        measured = check_version(control, ensemble, version)
    except RolloutRefused:
        _remove_refused(control, ensemble, version)
        raise
    log(f"version {version} checked: {measured}")
    _switch(control, ensemble, version)
    removed = prune(ensemble)
    control.wait_until_settled(ensemble)
    log(
        f"version {version} serves (was {served}) after {time.monotonic() - started:.1f} s"
        + (f"; removed old versions {removed}" if removed else "")
    )
    return served, version


def _remove_refused(control: ServerControl, ensemble: Ensemble, version: int) -> None:
    """Removes a refused version and loads the served versions again, so that the server runs what the
    repository holds (a version that failed to load left the loaded models as they were)."""
    remove_version(ensemble, version)
    try:
        control.load(ensemble.name)
        control.wait_until_settled(ensemble, ready=False)
    except RolloutError:
        pass  # the served version is still loaded and pinned: it keeps answering


def roll_back(repository: str | Path, log: Callable[[str], None] = print) -> tuple[int, int]:
    """Makes the built version before the served one the served one again: (old version, new version).
    The version rolled back from stays in the repository (a roll-out of it checks it again) until the
    next build replaces it. Raises RolloutError (nothing changed)."""
    control = ServerControl.serving(repository)
    ensemble = Ensemble.read(repository)
    _pin_running_version(control, ensemble)
    served = ensemble.served_version
    previous = max((v for v in ensemble.built_versions() if v < served), default=None)
    if previous is None:
        raise RolloutError(f"no version before the served version {served} is kept in {repository}")
    if not all(previous in control.ready_versions(model) for model in ensemble.versioned):
        # Only the two newest folders are loaded: the ones above the served version (rolled back from,
        # or refused) make way for it.
        for above in versions_above_served(ensemble):
            remove_version(ensemble, above)
        compile_model_code(ensemble.repository)
        control.load(ensemble.name)
        for model in ensemble.versioned:
            if previous not in control.ready_versions(model):
                raise RolloutError(f"version {previous} of {model} did not load")
    label, scores = classify_at_version(control, ensemble, previous, [canary.CANARY_TEXT])
    if label[0] not in ensemble.labels or abs(sum(scores[0]) - 1) > 1e-3:
        raise RolloutError(f"version {previous} answered its canary with {label[0]!r} {scores[0]}")
    _switch(control, ensemble, previous)
    control.wait_until_settled(ensemble)
    log(f"version {previous} serves again (was {served})")
    return served, previous
