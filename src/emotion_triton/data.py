"""Labelled text data: the Hub's `dair-ai/emotion`, or local files in three formats.

Local formats, chosen by file ending:
- `.txt`: one `text;label` per line, split on the LAST `;` (the layout of dair-ai/emotion's raw files);
- `.csv`: a header with `text` and `label` columns;
- `.jsonl` / `.json`: one JSON object per line with `text` and `label`.
A directory holds `train`, `validation` and optionally `test` files in any of them.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .hub import HubUnavailableError, hub_reachable
from .paths import SHARED_DIR

# dair-ai/emotion's class order: the order of the published model's outputs. Local
# files whose labels are exactly these names get this order too, so a model trained
# from them is interchangeable with one trained from the Hub.
EMOTION_LABELS = ("sadness", "joy", "love", "anger", "fear", "surprise")
# The emotion data's train and validation splits on the development machines, beside the checkout:
# the default of every command that reads labelled texts (the offline preset, evaluation, benchmark, load test);
# $EMOTION_TRITON_DATA names another folder of the same layout.
EMOTION_DATA_DIR = Path(os.environ.get("EMOTION_TRITON_DATA") or SHARED_DIR / "data" / "emotion")
EMOTION_VALIDATION_FILE = EMOTION_DATA_DIR / "validation.txt"
SPLITS = ("train", "validation", "test")
SUFFIXES = (".txt", ".csv", ".jsonl", ".json")


@dataclass
class Problems:
    """Rows of a file that could not be used, counted by reason."""

    empty: int = 0
    malformed: int = 0
    unknown_label: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, reason: str, where: str) -> None:
        setattr(self, reason, getattr(self, reason) + 1)
        if len(self.examples) < 5:
            self.examples.append(f"{where}: {reason.replace('_', ' ')}")

    @property
    def total(self) -> int:
        return self.empty + self.malformed + self.unknown_label


@dataclass
class Split:
    texts: list[str]
    labels: list[str]
    problems: Problems = field(default_factory=Problems)


@dataclass
class LabelledData:
    source: str
    splits: dict[str, Split]
    label_names: list[str]

    def ids(self, split: str) -> list[int]:
        index = {name: i for i, name in enumerate(self.label_names)}
        return [index[label] for label in self.splits[split].labels]


def read_file(path: str | Path) -> Split:
    """Reads one labelled file; bad rows are counted in `Split.problems`, never raised."""
    path = Path(path)
    split = Split([], [])
    for where, text, label in _rows(path, split.problems):
        if text is None or label is None:
            split.problems.add("malformed", where)
        elif not text.strip() or not label.strip():
            split.problems.add("empty", where)
        else:
            split.texts.append(text)
            split.labels.append(label.strip())
    return split


def _rows(path: Path, problems: Problems):
    suffix = path.suffix.lower()
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        if suffix == ".csv":
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"text", "label"} <= set(reader.fieldnames):
                raise ValueError(f"{path}: a CSV file needs a header with 'text' and 'label' columns")
            for number, row in enumerate(reader, start=2):
                yield f"{path.name}:{number}", row.get("text"), _label_str(row.get("label"))
        elif suffix in (".jsonl", ".json"):
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    problems.add("empty", f"{path.name}:{number}")
                    continue
                try:
                    row = json.loads(line)
                    yield f"{path.name}:{number}", row["text"], _label_str(row["label"])
                except (ValueError, KeyError, TypeError):
                    yield f"{path.name}:{number}", None, None
        else:
            for number, line in enumerate(handle, start=1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    problems.add("empty", f"{path.name}:{number}")
                    continue
                text, sep, label = line.rpartition(";")
                yield (f"{path.name}:{number}", text, label) if sep else (f"{path.name}:{number}", None, None)


def _label_str(value) -> str | None:
    return None if value is None else str(value)


def find_split_file(directory: str | Path, split: str) -> Path | None:
    for suffix in SUFFIXES:
        candidate = Path(directory) / f"{split}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def order_labels(labels: list[str], names: list[str] | None = None) -> list[str]:
    """The class order: `names` when given, dair-ai/emotion's for its names, else first appearance."""
    seen = list(dict.fromkeys(labels))
    if names:
        unknown = sorted(set(seen) - set(names))
        if unknown:
            raise ValueError(f"labels {unknown} are not among the given label names {names}")
        return list(names)
    if set(seen) == set(EMOTION_LABELS):
        return list(EMOTION_LABELS)
    return seen


def load(source: str, label_names: list[str] | None = None) -> LabelledData:
    """Loads a labelled data set from a local directory or file, or a Hub data set id.

    A directory needs at least `train` and `validation` files; a single file
    becomes the `validation` split. A Hub id may name a split after a colon
    (`dair-ai/emotion:test`), which then becomes the `validation` split.
    """
    if os.path.isdir(source):
        splits = {}
        for name in SPLITS:
            path = find_split_file(source, name)
            if path is not None:
                splits[name] = read_file(path)
        missing = [name for name in ("train", "validation") if name not in splits]
        if missing and not splits:
            raise FileNotFoundError(f"{source} holds no train/validation/test file ({', '.join(SUFFIXES)})")
    elif os.path.isfile(source):
        splits = {"validation": read_file(source)}
    else:
        splits, hub_names = _load_hub(source)
        label_names = label_names or hub_names
    all_labels = [label for split in splits.values() for label in split.labels]
    train_labels = splits["train"].labels if "train" in splits else all_labels
    names = order_labels(train_labels, label_names)
    known = set(names)
    for split in splits.values():
        keep = [i for i, label in enumerate(split.labels) if label in known]
        for i in set(range(len(split.labels))) - set(keep):
            split.problems.add("unknown_label", f"label {split.labels[i]!r}")
        split.texts = [split.texts[i] for i in keep]
        split.labels = [split.labels[i] for i in keep]
    return LabelledData(source=source, splits=splits, label_names=names)


def _load_hub(source: str) -> tuple[dict[str, Split], list[str]]:
    name, _, only = source.partition(":")
    if not hub_reachable():
        # datasets reads these when imported: use the local cache only, no minute of retries.
        os.environ["HF_DATASETS_OFFLINE"] = "1"
        os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import datasets

        loaded = datasets.load_dataset(name)
    except Exception as error:  # datasets raises many types for "not reachable / not cached"
        raise HubUnavailableError(
            f"cannot load data set '{name}' from the Hugging Face Hub ({type(error).__name__}); "
            "pass a local directory or file instead, e.g. ../shared/data/emotion"
        ) from error
    names = loaded["train"].features["label"].names
    splits = {}
    for split_name, rows in loaded.items():
        if only and split_name != only:
            continue
        key = "validation" if only else split_name
        splits[key] = Split(list(rows["text"]), [names[i] for i in rows["label"]])
    return splits, names
