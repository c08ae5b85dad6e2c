"""What the server serves (its labels, max_length and batch limit, read once) and the texts to send:
a labelled file, the Hub split, long texts near the truncation limit."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

from emotion_triton import data
from emotion_triton.client import EmotionClient
from emotion_triton.repository import PROJECT_ROOT

from .options import LONG_WORDS, Settings


# -- what the server serves -----------------------------------------------------------------------
@dataclass
class ServerInfo:
    labels: list[str]
    max_batch_size: int
    max_length: int | None  # the tokenizer's truncation length, when the ensemble names one

    @classmethod
    def fetch(cls, client: EmotionClient) -> ServerInfo:
        """Labels, the largest batch and the truncation length, from the server's model configs."""
        return cls(labels=list(client.labels), max_batch_size=client.max_batch_size, max_length=client.max_length)


def resolve_data(source: str) -> str:
    """A local path as given, else relative to the project; anything else is a Hub id."""
    if os.path.exists(source):
        return source
    in_project = PROJECT_ROOT / source
    if in_project.exists():
        return str(in_project)
    if source.startswith((".", "/", "~")) or Path(source).suffix.lower() in data.SUFFIXES:
        raise FileNotFoundError(f"--data {source}: no such file or directory")
    return source


def load_labelled(source: str) -> data.Split:
    """The labelled texts of --data: a file, a directory's validation split or a Hub split."""
    loaded = data.load(resolve_data(source))
    for name in ("validation", "test", "train"):
        if loaded.splits.get(name) and loaded.splits[name].texts:
            return loaded.splits[name]
    raise ValueError(f"--data {source}: no labelled texts in it")


def long_texts(texts: list[str], max_length: int, count: int, rng: random.Random) -> list[str]:
    """Texts near the truncation limit: some just under `max_length` tokens, some just over."""
    words = [text.split() for text in texts if text.split()]
    made = []
    for _ in range(count):
        target = int(max_length * rng.uniform(*LONG_WORDS))
        out: list[str] = []
        while len(out) < target:
            out.extend(rng.choice(words))
        made.append(" ".join(out[:target]))
    return made


@dataclass
class Workload:
    """The texts to send and how: built once per test start, shared by all users of a process."""

    settings: Settings
    server: ServerInfo
    texts: list[str]
    labels: list[str]
    long: list[str]

    @classmethod
    def build(cls, settings: Settings, server: ServerInfo, split: data.Split) -> Workload:
        unknown = sorted(set(split.labels) - set(server.labels))
        if unknown:
            raise ValueError(f"--data {settings.data}: labels {unknown} are not among the server's {server.labels}")
        too_big = [size for size, _ in settings.batch_sizes if size > server.max_batch_size]
        if too_big or settings.accuracy_batch_size > server.max_batch_size:
            raise ValueError(
                f"batch sizes {too_big or [settings.accuracy_batch_size]} exceed the server's max_batch_size "
                f"{server.max_batch_size}: change --batch-sizes / --accuracy-batch-size"
            )
        rng = random.Random(settings.seed)
        long = long_texts(split.texts, server.max_length or 128, 256, rng) if settings.long_share > 0 else []
        return cls(settings, server, list(split.texts), list(split.labels), long)

    def pick(self, rng: random.Random) -> tuple[str, list[str]]:
        """A request of the task mix: (its statistics name, its texts)."""
        sizes, weights = zip(*self.settings.batch_sizes, strict=True)
        size = rng.choices(sizes, weights)[0]
        if self.long and rng.random() < self.settings.long_share:
            return f"long batch {size}", rng.choices(self.long, k=size)
        return f"batch {size}", rng.choices(self.texts, k=size)

    def labelled(self, start: int) -> tuple[str, list[str], list[str], int]:
        """The accuracy user's next request: labelled texts in file order, from `start`, wrapping."""
        size = self.settings.accuracy_batch_size
        index = [(start + i) % len(self.texts) for i in range(size)]
        texts = [self.texts[i] for i in index]
        return f"accuracy batch {size}", texts, [self.labels[i] for i in index], (start + size) % len(self.texts)
