"""The labelled texts an evaluation sends: read from a file, a directory of splits or a Hub data set, and
their label names matched to the server's."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .. import data as data_module
from ..data import SUFFIXES, Problems
from ..errors import UsageError


class EvaluationError(UsageError):
    """A one-line reason the evaluation cannot start (bad options or input)."""


@dataclass
class LabelledTexts:
    source: str
    split: str | None  # None: a single file, all its rows
    texts: list[str]
    labels: list[str]
    problems: Problems = field(default_factory=Problems)
    unknown_labels: dict[str, int] = field(default_factory=dict)  # label -> rows, of labels the server lacks


# -- input -------------------------------------------------------------------------------------


def read_labelled(source: str, split: str = "validation") -> LabelledTexts:
    """One split of a labelled file, directory or Hub data set; bad rows are counted, never raised."""
    path = Path(source)
    if path.is_dir():
        found = data_module.find_split_file(path, split)
        if found is None:
            raise EvaluationError(f"{source} has no {split} file ({', '.join(f'{split}{s}' for s in SUFFIXES)})")
        path = found
    if path.is_file():
        try:
            rows = data_module.read_file(path)
        except ValueError as error:
            raise EvaluationError(str(error)) from error
        used_split = split if Path(source).is_dir() else None
        return LabelledTexts(str(path), used_split, rows.texts, rows.labels, rows.problems)
    if path.suffix.lower() in SUFFIXES or source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise EvaluationError(f"no such file or directory: {source}")
    name, _, only = source.partition(":")
    loaded = data_module.load(source)  # raises HubUnavailableError offline
    key = "validation" if only else split
    if key not in loaded.splits:
        raise EvaluationError(f"data set '{name}' has no split '{split}' (it has {', '.join(loaded.splits)})")
    rows = loaded.splits[key]
    return LabelledTexts(source, only or split, rows.texts, rows.labels, rows.problems)


def match_labels(data: LabelledTexts, server_labels: list[str]) -> list[int]:
    """Keeps the rows whose label the server knows and returns their class ids; counts the others."""
    index = {name: i for i, name in enumerate(server_labels)}
    keep = [i for i, label in enumerate(data.labels) if label in index]
    for i in sorted(set(range(len(data.labels))) - set(keep)):
        data.problems.add("unknown_label", f"label {data.labels[i]!r}")
        data.unknown_labels[data.labels[i]] = data.unknown_labels.get(data.labels[i], 0) + 1
    unknown = sorted(data.unknown_labels)
    data.texts = [data.texts[i] for i in keep]
    data.labels = [data.labels[i] for i in keep]
    if not data.texts:
        if unknown:
            raise EvaluationError(
                f"none of the labels of {data.source} ({', '.join(unknown[:10])}) is one the server knows "
                f"({', '.join(server_labels)})"
            )
        raise EvaluationError(f"{data.source} holds no usable labelled rows ({data.problems.total} skipped)")
    return [index[label] for label in data.labels]
