"""Roll-outs under load, shared by the local server's and the containers' tests: a bounded closed-loop
load, the response cache's hits per version, labelled data of one label, a new version copied from the
served one, and a classifier whose bias makes it answer one label."""

from __future__ import annotations

import re
import shutil
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from emotion_triton.client import EmotionClient
from emotion_triton.repository import Ensemble
from emotion_triton.repository.versions import next_version, remove_version, versions_above_served

PROBES = 4  # texts per request of the load
CLIENTS = 3  # closed loop: each sends its next request when the last one is answered
MAX_REQUESTS = 20_000  # bounds of every load: its count and its seconds
MAX_SECONDS = 120.0


@dataclass
class ClosedLoop:
    """CLIENTS threads sending the same texts over gRPC, without retries: every error counts."""

    url: str
    texts: list[str]
    answers: list[tuple[float, tuple[str, ...]]] = field(default_factory=list)  # (time answered, labels)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> ClosedLoop:
        deadline = time.monotonic() + MAX_SECONDS
        self._threads = [threading.Thread(target=self._client, args=(deadline,), daemon=True) for _ in range(CLIENTS)]
        for thread in self._threads:
            thread.start()
        return self

    def _client(self, deadline: float) -> None:
        with EmotionClient(self.url, retries=0, timeout=30.0) as client:
            while not self._stop.is_set() and time.monotonic() < deadline and len(self.answers) < MAX_REQUESTS:
                try:
                    labels, _ = client.infer(self.texts)
                    self.answers.append((time.monotonic(), tuple(labels)))
                except Exception as error:  # every failure is the test's finding
                    self.errors.append(f"{type(error).__name__}: {error}")

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def between(self, start: float, end: float) -> set[tuple[str, ...]]:
        return {labels for at, labels in self.answers if start <= at < end}


def cache_hits(metrics_url: str, model: str) -> dict[int, float]:
    """Triton's response-cache hits of each version of `model`."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    pattern = rf'^nv_cache_num_hits_per_model{{model="{model}",version="(\d+)"}} (\S+)$'
    return {int(version): float(value) for version, value in re.findall(pattern, text, re.MULTILINE)}


def single_label_data(source: Path, target: Path, label: str) -> Path:
    """The small data set with every training text labelled `label` (its validation split as it is): a
    model trained on it answers `label` to everything, so its answers differ from the served model's."""
    target.mkdir()
    rows = (source / "train.txt").read_text().splitlines()
    (target / "train.txt").write_text("".join(f"{row.rsplit(';', 1)[0]};{label}\n" for row in rows))
    shutil.copy(source / "validation.txt", target / "validation.txt")
    return target


def install_copy(ensemble: Ensemble, source: int | None = None) -> int:
    """A new version: a copy of the served one's folders (or `source`'s), numbered and placed as a
    build installs it."""
    version = next_version(ensemble)  # never a number used before (the response cache keys by it)
    for model in ensemble.versioned:
        # New files, as a build writes them: Triton tells a changed version folder by its files' times.
        shutil.copytree(
            ensemble.version_dir(model, source), ensemble.version_dir(model, version), copy_function=shutil.copyfile
        )
    for above in versions_above_served(ensemble):  # only the two newest folders load
        if above != version:
            remove_version(ensemble, above)
    return version


def skew_classifier_bias(path: Path, label: int) -> None:
    """A model.onnx that loads and answers, but every text `label`: its classifier's bias dwarfs the logits."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    # The output layer's: DistilBERT's pre_classifier.bias ends the same way.
    bias = next(i for i in model.graph.initializer if i.name.split(".")[-2:] == ["classifier", "bias"])
    values = numpy_helper.to_array(bias).copy()
    values[:] = 0.0
    values[label] = 1e4
    bias.CopyFrom(numpy_helper.from_array(values, bias.name))
    onnx.save(model, str(path))
