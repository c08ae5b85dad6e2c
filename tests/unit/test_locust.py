"""The Locust load test: the logic of emotion_lab.loadtest, and short headless runs of
loadtest/locustfile.py against a real tritonserver serving a tiny model.

Locust itself is only ever imported in subprocesses: importing it monkey-patches the whole process
with gevent, which this test process must not be.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest

from emotion_lab import loadtest
from emotion_triton.client import RequestTimeoutError, ServerOverloadedError
from emotion_triton.data import EMOTION_LABELS, read_file

PROJECT = Path(__file__).resolve().parents[2]
LOCUST = Path(sys.executable).parent / "locust"
LOCUSTFILE = PROJECT / "loadtest" / "locustfile.py"
LABELS = list(EMOTION_LABELS)


# -- the pieces, without locust -------------------------------------------------------------------
def test_batch_sizes_parse_with_weights_and_reject_nonsense():
    assert loadtest.parse_batch_sizes("1:6,8:3,64:1") == [(1, 6.0), (8, 3.0), (64, 1.0)]
    assert loadtest.parse_batch_sizes("8") == [(8, 1.0)]
    for bad in ("", "0", "x:1", "8:0", "8:-1"):
        with pytest.raises(ValueError, match="--batch-sizes"):
            loadtest.parse_batch_sizes(bad)


def workload(emotion_data, **settings) -> loadtest.Workload:
    options = {"url": "127.0.0.1:1", **settings}
    server = loadtest.ServerInfo(LABELS, max_batch_size=64, max_length=128)
    return loadtest.Workload.build(loadtest.Settings(**options), server, read_file(emotion_data / "validation.txt"))


def test_the_task_mix_draws_batch_sizes_and_long_texts_near_the_truncation_limit(emotion_data):
    mix = workload(emotion_data, batch_sizes=[(1, 1.0), (8, 1.0), (64, 1.0)], long_share=0.5)
    rng = random.Random(1)
    picks = [mix.pick(rng) for _ in range(300)]
    sizes = {len(texts) for _, texts in picks}
    assert sizes == {1, 8, 64}
    assert all(name.endswith(f"batch {len(texts)}") for name, texts in picks)
    long = [texts for name, texts in picks if name.startswith("long")]
    assert 0.35 < len(long) / len(picks) < 0.65
    words = [len(text.split()) for texts in long for text in texts]
    assert int(0.8 * 128) <= min(words) and max(words) <= 1.1 * 128  # around 128 tokens: some truncated, some not
    assert all(text in mix.texts for name, texts in picks if not name.startswith("long") for text in texts)


def test_the_accuracy_user_walks_the_labelled_file_in_order_and_wraps(emotion_data):
    mix = workload(emotion_data, accuracy_batch_size=16)
    split = read_file(emotion_data / "validation.txt")
    name, texts, labels, position = mix.labelled(len(split.texts) - 4)
    assert name == "accuracy batch 16" and position == 12
    assert texts == split.texts[-4:] + split.texts[:12] and labels == split.labels[-4:] + split.labels[:12]


def test_a_workload_the_server_cannot_answer_is_refused_at_start(emotion_data, tmp_path):
    with pytest.raises(ValueError, match="max_batch_size 64"):
        workload(emotion_data, batch_sizes=[(128, 1.0)])
    odd = tmp_path / "odd.txt"
    odd.write_text("i feel fine;calm\n", encoding="utf-8")
    server = loadtest.ServerInfo(LABELS, 64, 128)
    with pytest.raises(ValueError, match="calm"):
        loadtest.Workload.build(loadtest.Settings(url="x"), server, loadtest.load_labelled(str(odd)))
    with pytest.raises(FileNotFoundError, match="no such file"):
        loadtest.load_labelled("missing/validation.txt")
    assert Path(loadtest.resolve_data(loadtest.DEFAULT_DATA)).is_file()  # from the project or the current folder


def test_answers_are_checked_and_failures_named_by_kind():
    scores = np.array([[0.7, 0.1, 0.05, 0.05, 0.05, 0.05], [0.1, 0.1, 0.1, 0.6, 0.05, 0.05]], dtype=np.float32)
    assert loadtest.check_answer(["sadness", "anger"], scores, 2, LABELS) is None
    assert "2 labels" in loadtest.check_answer(["sadness", "anger"], scores, 3, LABELS)
    assert "not among" in loadtest.check_answer(["sadness", "calm"], scores, 2, LABELS)
    assert "highest" in loadtest.check_answer(["joy", "anger"], scores, 2, LABELS)
    assert "probabilities" in loadtest.check_answer(["sadness", "anger"], scores * 2, 2, LABELS)
    overloaded = ServerOverloadedError("the server is overloaded: Exceeds maximum queue size")
    assert loadtest.failure_message(overloaded) == "overloaded: the server is overloaded: Exceeds maximum queue size"
    assert loadtest.failure_message(RequestTimeoutError("no answer in time")).startswith("timeout: ")
    assert loadtest.failure_message(KeyError("x")) == "error: KeyError: 'x'"


def results(**changes) -> loadtest.Results:
    values = {
        "requests": 1000,
        "failures": 0,
        "failures_by_kind": {},
        "p50_ms": 20.0,
        "p95_ms": 80.0,
        "requests_per_second": 50.0,
        "texts": 8000,
        "texts_per_second": 400.0,
        "checked": 500,
        "wrong": 40,
    }
    return loadtest.Results(**{**values, **changes})


def test_thresholds_name_each_crossing_on_its_own_line():
    limits = loadtest.Thresholds(max_failure_ratio=0.01, max_p95_ms=1000, min_texts_per_second=100, min_accuracy=0.9)
    assert results().crossed(limits) == []
    crossed = results(failures=20, failures_by_kind={"overloaded": 20}, p95_ms=1500, texts_per_second=50, wrong=100)
    lines = crossed.crossed(limits)
    assert len(lines) == 4
    assert any("--max-failure-ratio" in line and "2.00%" in line for line in lines)
    assert any("--max-p95-ms" in line for line in lines)
    assert any("--min-texts-per-second" in line for line in lines)
    assert any("accuracy 80.00%" in line and "--min-accuracy" in line for line in lines)
    assert "1000 (50.0/s), failed 20 (2.00%: 20 overloaded)" in "\n".join(crossed.summary())
    # Too few labelled texts to judge accuracy; no request at all fails.
    assert results(checked=50, wrong=50).crossed(limits) == []
    assert results(requests=0, texts=0, texts_per_second=0, checked=0, wrong=0).crossed(
        loadtest.Thresholds(min_texts_per_second=0)
    ) == ["no request was sent"]
    lines, crossed_lines = loadtest.report(crossed, limits, "header", ["CPU client: ..."])
    assert lines[0] == "header" and "result:      FAIL (4 thresholds crossed)" in lines and len(crossed_lines) == 4


class FakeEntry:
    def __init__(self):
        self.num_requests = self.num_failures = 0
        self.response_times: dict[int, int] = {}


class FakeStats:
    """The two things the shape reads of locust's RequestStats: the Aggregated row and the texts row."""

    def __init__(self):
        self.total = FakeEntry()
        self.entries = {(loadtest.TEXTS[1], loadtest.TEXTS[0]): FakeEntry()}

    def add(self, requests, texts, latency_ms, failures=0):
        self.total.num_requests += requests
        self.total.num_failures += failures
        self.total.response_times[latency_ms] = self.total.response_times.get(latency_ms, 0) + requests
        self.entries[(loadtest.TEXTS[1], loadtest.TEXTS[0])].num_requests += texts


class Clock:
    """What LoadTestShape gives the shape: a run time, and its reset when the shape starts."""

    def reset_time(self):
        self.now = 0.0

    def get_run_time(self):
        return self.now


class Shape(loadtest.ShapeLogic, Clock):
    """The locustfile's LoadShape with a hand-set clock instead of LoadTestShape, and a fake runner."""

    def __init__(self, **options):
        defaults = {"shape": "step", "num_users": None, "spawn_rate": None, "run_time": None}
        defaults |= {"step_users": 2, "step_seconds": 10.0, "step_max_users": 5}
        self.runner = Namespace(environment=Namespace(parsed_options=Namespace(**{**defaults, **options})))
        self.runner.stats = FakeStats()
        self.reset_time()


def test_the_step_ramp_adds_users_per_step_records_each_step_and_finds_the_knee():
    shape = Shape()
    stats = shape.runner.stats
    # (run time, expected tick, traffic during the following step: requests, texts, latency)
    plan = [(0.0, (2, 2.0), (100, 800, 20)), (10.0, (4, 2.0), (200, 1600, 30)), (20.0, (5, 2.0), (205, 1640, 90))]
    for now, expected, traffic in plan:
        shape.now = now
        assert shape.tick() == expected
        shape.now = now + 5
        assert shape.tick() == expected  # same step: same users
        stats.add(*traffic)
    shape.now = 30.0
    assert shape.tick() is None  # after the last step (2, 4, then 5 = --step-max-users)
    assert [step.users for step in shape.steps] == [2, 4, 5]
    assert [round(step.texts_per_second) for step in shape.steps] == [80, 160, 164]
    assert [step.p95 for step in shape.steps] == [20, 30, 90]
    report = "\n".join(shape.step_report(latency_factor=2.0))
    assert "latency knee: p95 90 ms at 5 users, over 2x the 20 ms at 2" in report
    assert "throughput: stops rising (< +5%) at 5 users; peak 164.0 texts/s at 5 users" in report
    shape.reset_time()  # the next test of a web UI session starts a new record
    assert shape.steps == [] and shape.tick() == (2, 2.0)


def test_the_steady_shape_runs_locusts_users_for_its_run_time():
    shape = Shape(shape="steady", num_users=6, spawn_rate=3.0, run_time=20)
    assert shape.tick() == (6, 3.0)
    shape.now = 20.0
    assert shape.tick() is None
    endless = Shape(shape="steady", num_users=2, spawn_rate=2.0)
    endless.now = 1e6
    assert endless.tick() == (2, 2.0)


def test_importing_the_logic_does_not_import_locust_or_gevent():
    code = "import sys, emotion_lab.loadtest; print(sorted({'locust', 'gevent'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr


def test_the_options_are_in_locusts_parser_and_its_help():
    # locust 2.47 prints `--help` before it imports a locustfile (locust issue #2917): the locustfile prints it.
    result = subprocess.run([sys.executable, LOCUSTFILE, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--headless" in result.stdout  # locust's own options, from locust's own parser
    assert "--triton-url" not in result.stdout and "--protocol" not in result.stdout  # the server is --host
    for option in (
        "--host",
        "--data",
        "--batch-sizes",
        "--long-share",
        "--shape",
        "--step-users",
        "--max-failure-ratio",
        "--max-p95-ms",
        "--min-texts-per-second",
        "--min-accuracy",
    ):
        assert option in result.stdout
    parsed = subprocess.run(
        [LOCUST, "-f", LOCUSTFILE, "--shape", "step", "--min-accuracy", "0.9", "--host", "http://h:1", "--list"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert parsed.returncode == 0, parsed.stderr
    assert "TritonUser" in parsed.stdout and "AccuracyUser" in parsed.stdout


def test_the_host_is_a_url_whose_scheme_is_the_protocol():
    assert loadtest.DEFAULT_HOST == "grpc://127.0.0.1:8001"
    assert loadtest.parse_host("grpc://127.0.0.1:8001") == ("grpc", "127.0.0.1:8001")
    assert loadtest.parse_host(" http://my-server:8000/ ") == ("http", "my-server:8000")
    for bad in ("127.0.0.1:8001", "https://my-server:8000", "http://", "http://host:8000/v2/models"):
        with pytest.raises(ValueError, match="grpc://127.0.0.1:8001 or http://127.0.0.1:8000"):
            loadtest.parse_host(bad)
    parser = argparse.ArgumentParser()
    loadtest.add_options(parser)
    options = parser.parse_args([])
    assert loadtest.Settings.from_options(options, None).url == "127.0.0.1:8001"
    assert loadtest.Settings.from_options(options, "http://h:8000").protocol == "http"


class Entry:
    def __init__(self, num_requests=0, num_failures=0, current_rps=0.0):
        self.num_requests, self.num_failures, self.current_rps = num_requests, num_failures, current_rps


def test_the_charts_record_texts_per_second_and_the_accuracy_so_far():
    history = loadtest.ChartHistory(limit=3)
    entries = {loadtest.TEXTS: Entry(current_rps=12.5), loadtest.ACCURACY: Entry()}
    stats = Namespace(get=lambda name, method: entries[method, name])
    assert history.record(stats, 2, now=1.0)["accuracy"] is None  # nothing checked yet
    entries[loadtest.ACCURACY] = Entry(num_requests=200, num_failures=30)
    point = history.record(stats, 2, now=2.0)
    assert point == {"time": 2.0, "texts_per_second": 12.5, "accuracy": 0.85, "labelled_texts": 200, "users": 2}
    for now in (3.0, 4.0):
        history.record(stats, 2, now=now)
    assert [point["time"] for point in history.points] == [2.0, 3.0, 4.0]
    page = "<html><body><div id='root'></div></body></html>"
    with_script = loadtest.web_charts.with_script(page)
    assert with_script.count("emotion/charts.js") == 1 and loadtest.web_charts.with_script(with_script) == with_script
