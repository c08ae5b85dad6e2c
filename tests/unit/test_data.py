"""Reading labelled data: the three local formats, bad rows, label order, the Hub offline."""

import json

import pytest

from emotion_triton import data
from emotion_triton.hub import HubUnavailableError


def test_reads_the_real_emotion_splits_in_the_hubs_label_order(emotion_data):
    loaded = data.load(str(emotion_data))
    assert loaded.label_names == list(data.EMOTION_LABELS)
    assert len(loaded.splits["train"].texts) == 16000
    assert len(loaded.splits["validation"].texts) == 2000
    assert loaded.splits["train"].problems.total == 0


def test_three_formats_read_the_same_rows(tmp_path):
    rows = [("i feel; so happy", "joy"), ("what a dull day", "sadness"), ("wow", "surprise")]
    (tmp_path / "a.txt").write_text("".join(f"{t};{label}\n" for t, label in rows))
    (tmp_path / "b.csv").write_text("text,label\n" + "".join(f'"{t}",{label}\n' for t, label in rows))
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": t, "label": label}) + "\n" for t, label in rows))
    for name in ("a.txt", "b.csv", "c.jsonl"):
        split = data.read_file(tmp_path / name)
        assert list(zip(split.texts, split.labels, strict=True)) == rows, name


def test_bad_rows_are_counted_not_raised(tmp_path):
    (tmp_path / "validation.txt").write_text("good text;joy\n\nno separator here\n;joy\nsome text;unknownlabel\n")
    (tmp_path / "train.txt").write_text("a;joy\nb;sadness\n")
    loaded = data.load(str(tmp_path))
    problems = loaded.splits["validation"].problems
    assert loaded.splits["validation"].texts == ["good text"]
    assert (problems.empty, problems.malformed, problems.unknown_label) == (2, 1, 1)


def test_label_order_comes_from_the_data_or_the_option(tmp_path):
    (tmp_path / "train.txt").write_text("a;pos\nb;neg\nc;pos\n")
    (tmp_path / "validation.txt").write_text("d;neg\n")
    assert data.load(str(tmp_path)).label_names == ["pos", "neg"]
    assert data.load(str(tmp_path), ["neg", "pos"]).label_names == ["neg", "pos"]
    with pytest.raises(ValueError, match="not among"):
        data.load(str(tmp_path), ["neg", "other"])


def test_hub_data_fails_fast_offline_naming_the_local_option(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data.hub_reachable.cache_clear()
    with pytest.raises(HubUnavailableError, match="local directory or file") as raised:
        data.load("dair-ai/emotion-does-not-exist-here")
    # the Hub code itself works: offline is the only reason it failed
    assert not isinstance(raised.value.__cause__, ImportError), raised.value.__cause__
    data.hub_reachable.cache_clear()
