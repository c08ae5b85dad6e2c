"""client/evaluate.py against a real tritonserver: parity with the eager model, metrics, bad input, reports."""

import json
import math
import shutil
import socket
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from emotion_triton.build.modeling import checkpoint_labels, load_classifier, load_tokenizer, predict_logits, softmax
from emotion_triton.client import EmotionClient
from emotion_triton.evaluation.sending import latency_summary, send_texts
from emotion_triton.repository import Ensemble
from tests.helpers.scripts import evaluate

ROWS = 300
BATCH = 16
REPORT_KEYS = {
    "source",
    "split",
    "server",
    "settings",
    "skipped_rows",
    "texts",
    "answered",
    "failed",
    "failed_by_kind",
    "failures",
    "metrics",
    "throughput",
    "parity",
    "predictions",
    "exit_code",
}


def url_of(server, protocol: str) -> str:
    return server.grpc_url if protocol == "grpc" else server.http_url


@pytest.fixture(scope="module")
def labelled_file(tmp_path_factory, emotion_data) -> Path:
    """A few hundred real validation rows, plus one text past the 128-token limit and one in other scripts."""
    lines = (emotion_data / "validation.txt").read_text(encoding="utf-8").splitlines()[: ROWS - 2]
    texts = [line.rpartition(";")[0] for line in lines]
    lines.append(" ".join(sorted(texts, key=len)[-3:]) * 2 + ";joy")
    lines.append("je me sens très heureux 😊 今日はとても嬉しい;joy")
    path = tmp_path_factory.mktemp("evaluate") / "validation.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def parity_runs(served, built_repository, labelled_file):
    """protocol -> (completed process, its JSON document) of a --compare-with run, run once each."""
    server = served("distilbert")
    _, checkpoint = built_repository("distilbert")
    runs = {}

    def run(protocol: str):
        if protocol not in runs:
            result = evaluate(
                labelled_file,
                *("--protocol", protocol, "--url", url_of(server, protocol)),
                *("--batch-size", BATCH, "--concurrency", 3, "--compare-with", checkpoint, "--json"),
            )
            assert result.stdout, result.stderr
            runs[protocol] = (result, json.loads(result.stdout))
        return runs[protocol]

    return run


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_served_predictions_equal_the_eager_model(protocol, parity_runs, built_repository, labelled_file):
    result, report = parity_runs(protocol)
    assert result.returncode == 0, result.stderr
    parity = report["parity"]
    assert parity["passed"] and parity["agreement"] == 1.0 and parity["max_abs_diff"] < 1e-4
    assert parity["compared"] == report["answered"] == report["texts"] == ROWS and report["failed"] == 0

    # Checked here independently of the tool: the eager checkpoint on the same texts.
    repository, checkpoint = built_repository("distilbert")
    ensemble = Ensemble.read(repository)
    assert parity["max_length"] == ensemble.max_length and report["server"]["labels"] == ensemble.labels
    tokenizer, model = load_tokenizer(str(checkpoint), "test"), load_classifier(str(checkpoint), "test")
    assert checkpoint_labels(model) == ensemble.labels
    rows = report["predictions"]
    texts = [row["text"] for row in rows]
    assert texts == [line.rpartition(";")[0] for line in labelled_file.read_text(encoding="utf-8").splitlines()]
    expected = softmax(predict_logits(model, tokenizer, texts, ensemble.max_length))
    served = np.array([row["scores"] for row in rows])
    assert np.abs(served - expected).max() < 1e-4
    assert [row["predicted"] for row in rows] == [ensemble.labels[i] for i in expected.argmax(axis=1)]

    throughput = report["throughput"]
    assert throughput["requests"] == math.ceil(ROWS / BATCH) and throughput["failed_requests"] == 0
    assert throughput["samples_per_second"] > 0 and throughput["seconds"] > 0
    latency = throughput["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    assert report["server"]["protocol"] == protocol and report["settings"]["batch_size"] == BATCH


def test_json_report_has_every_field_and_sklearns_metrics(parity_runs, labelled_file):
    _, report = parity_runs("grpc")
    assert set(report) == REPORT_KEYS and report["exit_code"] == 0
    assert report["skipped_rows"]["total"] == 0 and report["failures"] == []
    assert set(report["throughput"]["latency_ms"]) == {"p50", "p95", "p99", "mean", "max"}
    labels = report["server"]["labels"]
    rows = report["predictions"]
    file_labels = [line.rpartition(";")[2] for line in labelled_file.read_text(encoding="utf-8").splitlines()]
    assert [row["label"] for row in rows] == file_labels
    y_true = [labels.index(row["label"]) for row in rows]
    y_pred = [labels.index(row["predicted"]) for row in rows]
    ids = list(range(len(labels)))
    metrics = report["metrics"]
    assert metrics["samples"] == ROWS and metrics["labels"] == labels
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert metrics["f1_weighted"] == pytest.approx(f1_score(y_true, y_pred, labels=ids, average="weighted"))
    assert metrics["f1_macro"] == pytest.approx(f1_score(y_true, y_pred, labels=ids, average="macro"))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0)
    for i, name in enumerate(labels):
        assert metrics["per_class"][name] == pytest.approx(
            {"precision": precision[i], "recall": recall[i], "f1": f1[i], "support": support[i]}
        )
    assert metrics["confusion_matrix"] == confusion_matrix(y_true, y_pred, labels=ids).tolist()
    assert Counter(file_labels) == {
        name: row["support"] for name, row in metrics["per_class"].items() if row["support"]
    }


def test_a_different_model_fails_parity_with_exit_code_3(served, built_repository, labelled_file, tmp_path):
    """One class's bias moved by 0.05: labels may still agree, the probabilities do not (>= 1e-4)."""
    server = served("distilbert")
    _, checkpoint = built_repository("distilbert")
    changed = shutil.copytree(checkpoint, tmp_path / "changed")  # the tokenizer files
    model = load_classifier(str(checkpoint), "test")
    model.classifier.bias.data[0] += 0.05
    model.save_pretrained(changed)
    lines = labelled_file.read_text(encoding="utf-8").splitlines()[:40]
    (tmp_path / "some.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = evaluate(tmp_path / "some.txt", "--url", server.grpc_url, "--compare-with", changed, "--json")
    assert result.returncode == 3
    parity = json.loads(result.stdout)["parity"]
    assert not parity["passed"] and parity["max_abs_diff"] >= 1e-4 and parity["compared"] == 40
    assert result.stderr.strip().splitlines()[-1].startswith("error: parity FAILED")


MALFORMED_ROWS = [
    "",  # empty line
    "   ",  # blank line
    "no separator on this line",  # malformed
    "i feel odd;bewildered",  # a label the model does not know
    "i feel great;Joy",  # names are matched exactly
    ";joy",  # empty text
    "a text with a nul \x00 inside;joy",  # the server refuses it
    "x" * 70_000 + ";fear",  # over the server's 64 KiB limit: refused
]


@pytest.fixture(scope="module")
def malformed_file(tmp_path_factory, labelled_file) -> Path:
    good = labelled_file.read_text(encoding="utf-8").splitlines()[:20]
    path = tmp_path_factory.mktemp("malformed") / "mixed.txt"
    path.write_text("\n".join(good[:10] + MALFORMED_ROWS + good[10:]) + "\n", encoding="utf-8")
    return path


def test_bad_rows_and_refused_texts_are_counted_and_reported(served, malformed_file):
    server = served("distilbert")
    result = evaluate(malformed_file, "--url", server.grpc_url, "--json")
    assert result.returncode == 1  # texts failed: documented exit code 1
    assert result.stderr.strip().splitlines()[-1] == "error: 2 of 22 texts were not classified"
    report = json.loads(result.stdout)
    skipped = report["skipped_rows"]
    assert (skipped["empty"], skipped["malformed"], skipped["unknown_label"], skipped["total"]) == (3, 1, 2, 6)
    assert skipped["unknown_labels"] == {"bewildered": 1, "Joy": 1}
    assert "mixed.txt:13: malformed" in skipped["examples"]
    assert (report["texts"], report["answered"], report["failed"]) == (22, 20, 2)
    assert report["failed_by_kind"] == {"refused": 2}
    nul, large = report["failures"]
    assert (nul["index"], nul["label"], large["index"], large["label"]) == (10, "joy", 11, "fear")
    assert "NUL" in nul["error"] and "70000 bytes" in large["error"]
    assert report["metrics"]["samples"] == 20 and report["exit_code"] == 1
    refused = [row for row in report["predictions"] if row["predicted"] is None]
    assert [row["text"][:8] for row in refused] == ["a text w", "xxxxxxxx"]


def test_text_report_and_report_dir_over_http(served, malformed_file, tmp_path):
    server = served("distilbert")
    result = evaluate(
        malformed_file, "--protocol", "http", "--url", server.http_url, "--report-dir", tmp_path / "report"
    )
    assert result.returncode == 1
    out = result.stdout
    assert "skipped rows: 6 (empty 3, malformed 1, unknown label 2)" in out
    assert "labels the server does not know: 'bewildered' (1), 'Joy' (1)" in out
    assert "failed texts: 2 (refused 2)" in out and "NUL character" in out
    assert "request latency: p50" in out and "texts/s" in out
    assert "metrics of the 20 answered texts:" in out and "confusion matrix" in out and "weighted F1" in out

    written = json.loads((tmp_path / "report" / "evaluation.json").read_text(encoding="utf-8"))
    assert set(written) == REPORT_KEYS and written["server"]["protocol"] == "http" and written["answered"] == 20
    png = tmp_path / "report" / "confusion_matrix.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    image = matplotlib.image.imread(png)
    assert image.shape[0] > 200 and image.shape[1] > 200 and image[..., :3].std() > 0.05  # a picture, not blank


def test_jsonl_split_of_a_directory_matches_labels_by_the_servers_names(served, labelled_file, tmp_path):
    """The file's first labels are not the server's first: ids must come from the server's names."""
    server = served("distilbert")
    rows = [line.rpartition(";") for line in labelled_file.read_text(encoding="utf-8").splitlines()[:40]]
    rows.sort(key=lambda row: row[2], reverse=True)  # surprise, sadness, love, ... first
    data = tmp_path / "data"
    data.mkdir()
    (data / "test.jsonl").write_text("".join(json.dumps({"text": t, "label": label}) + "\n" for t, _, label in rows))
    result = evaluate(data, "--split", "test", "--url", server.grpc_url, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["split"] == "test" and report["source"].endswith("test.jsonl")
    counts = Counter(label for _, _, label in rows)
    assert {name: row["support"] for name, row in report["metrics"]["per_class"].items()} == {
        name: counts.get(name, 0) for name in report["server"]["labels"]
    }
    correct = sum(row["label"] == row["predicted"] for row in report["predictions"])
    assert report["metrics"]["accuracy"] == pytest.approx(correct / len(rows))


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["missing.txt"], 2, "error: no such file or directory: missing.txt"),
        (["{data}"], 2, "error: {data} has no validation file"),
        (
            ["{file}", "--batch-size", "65"],
            2,
            "error: --batch-size must be between 1 and the server's max_batch_size 64",
        ),
        (["{unknown}"], 2, "error: none of the labels of {unknown} (happy, sad) is one the server knows"),
        (["{file}", "--url", "127.0.0.1:1"], 1, "error: cannot reach a Triton server at 127.0.0.1:1"),
    ],
)
def test_usage_and_connection_errors_are_one_line(served, tmp_path, args, code, message):
    server = served("distilbert")
    names = {"data": tmp_path, "file": tmp_path / "ok.txt", "unknown": tmp_path / "unknown.txt"}
    names["file"].write_text("i feel great;joy\n")
    names["unknown"].write_text("i feel great;happy\ni feel bad;sad\n")
    args = [arg.format(**names) for arg in args]
    result = evaluate(*args, *([] if "--url" in args else ["--url", server.grpc_url]))
    assert result.returncode == code
    assert result.stderr.startswith(message.format(**names)) and result.stderr.count("\n") == 1


def test_send_texts_keeps_the_order_times_each_request_and_shows_progress(served, validation_texts, capsys):
    server = served("distilbert")
    texts = validation_texts[:24]
    with EmotionClient(server.grpc_url) as client:
        expected = client.classify(texts)
        result = send_texts(client, texts, batch_size=5, concurrency=3, progress=True)
    assert [outcome.label for outcome in result.outcomes] == [p.label for p in expected]
    for outcome, prediction in zip(result.outcomes, expected, strict=True):
        assert outcome.scores == pytest.approx(list(prediction.scores.values()), abs=1e-6)
    assert sorted(request.texts for request in result.requests) == [4, 5, 5, 5, 5]
    assert all(0 < request.seconds <= result.seconds and request.attempts >= 1 for request in result.requests)
    assert "24/24" in capsys.readouterr().err


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_transport_errors_are_counted_per_text_not_raised(served, validation_texts, protocol):
    server = served("distilbert")
    texts = validation_texts[:24]
    with EmotionClient(url_of(server, protocol), protocol) as client:
        config, labels = client.config, client.labels
    # A server that accepts connections and never answers: every request times out, whatever the timing.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        silent_url = f"127.0.0.1:{silent.getsockname()[1]}"
        with EmotionClient(silent_url, protocol, timeout=0.5, retries=0) as client:
            client._config, client._labels = config, labels  # known already: only the inferences go unanswered
            result = send_texts(client, texts, batch_size=8, concurrency=2)
    kinds = [outcome.kind for outcome in result.outcomes]
    assert set(kinds) == {"timeout"}, kinds
    assert all(outcome.error and outcome.label is None for outcome in result.outcomes)
    for start in range(0, len(texts), 8):  # a request's texts share its error
        assert len({outcome.error for outcome in result.outcomes[start : start + 8]}) == 1
    summary = latency_summary(result)
    assert (summary["requests"], summary["failed_requests"], summary["latency_ms"]) == (3, 3, None)
    assert summary["samples_per_second"] == 0
