"""The performance features: int8 export, padding counters, the load generator and the benchmark's outputs."""

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from tokenizers import Tokenizer
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from emotion_lab.perf.benchmark import BenchOptions, model_table, run
from emotion_lab.perf.response_cache_bench import (
    CONCURRENCY,
    REPEAT_SHARES,
    cache_summary,
    cache_table,
    plot_response_cache,
    sweep_response_cache,
)
from emotion_triton.build import onnx_export, precision_gate
from emotion_triton.build.modeling import predict_logits, softmax
from emotion_triton.build.pipeline import BuildOptions, QuantizationRefused, build
from emotion_triton.build.torchscript_export import INT8_MIXED_BATCH_TOLERANCE
from emotion_triton.build.training import training_arguments
from emotion_triton.client import EmotionClient
from emotion_triton.data import read_file
from emotion_triton.repository import VARIANTS, Ensemble
from emotion_triton.serving.prometheus import COMPUTED_TOKENS, REAL_TOKENS, metric_total, triton_metrics
from tests.helpers.servers import CLASSIFIERS, copy_repository, start_server


def int8_options(tmp_path, checkpoint, small_data):
    return BuildOptions(
        finetuned=str(checkpoint),
        data=str(small_data / "validation.txt"),
        repository=copy_repository(tmp_path / "repo"),
        quantize="int8",
    )


def test_int8_export_reports_its_accuracy_loss(tmp_path, built_repository, small_data, monkeypatch):
    _, checkpoint = built_repository("bert")
    monkeypatch.setattr(precision_gate, "MAX_INT8_ACCURACY_LOSS_POINTS", 100.0)  # a tiny random model may lose more
    options = int8_options(tmp_path, checkpoint, small_data)
    report = build(options, training_arguments(tmp_path / "run"))
    quantization = report["quantization"]
    assert quantization["accuracy_loss_points"] == pytest.approx(
        100 * (quantization["fp32_accuracy"] - quantization["int8_accuracy"]), abs=1e-3
    )
    assert report["validation"]["accuracy"] == quantization["int8_accuracy"]
    assert report["validation_fp32"]["accuracy"] == quantization["fp32_accuracy"]
    # Measured as served, in both layouts, and held to the worse one.
    by_layout = quantization["int8_accuracy_by_layout"]
    assert set(by_layout) == {"requests of 64 texts in file order", "one text per request"}
    assert quantization["int8_accuracy"] == min(by_layout.values()) == by_layout[quantization["int8_layout"]]
    assert quantization["installed"] == report["onnx"]["quantization"]["installed"] == "int8"
    scripted = torch.jit.load(str(Ensemble.read(options.repository).model_file))
    assert "quantized::linear_dynamic" in str(scripted.inlined_graph)
    # Every MatMul by a weight is a MatMulInteger; the fp32 MatMuls left are attention's, of two activations.
    graph = onnx.load(str(Ensemble.read(options.repository).onnx_file)).graph
    assert "DynamicQuantizeLinear" in operators(graph)
    weights = {initializer.name for initializer in graph.initializer}
    weights |= {node.output[0] for node in graph.node if node.op_type == "Identity" and node.input[0] in weights}
    matmuls = [node for node in graph.node if node.op_type == "MatMul"]
    assert not [node.name for node in matmuls if node.input[1] in weights]
    assert sum(node.op_type == "MatMulInteger" for node in graph.node) > len(matmuls)


@pytest.mark.parametrize("classifier", CLASSIFIERS)
def test_int8_serves_with_the_exports_parity_on_both_classifiers(
    tmp_path, built_repository, small_data, validation_texts, monkeypatch, classifier
):
    """Alone, each text's served int8 scores equal the in-process int8 model's (torch's for model.pt,
    ONNX Runtime's for model.onnx); in a dynamic batch of mixed lengths they stay within the
    export's int8 bound (dynamic int8 scales activations per chunk)."""
    _, checkpoint = built_repository("distilbert")
    monkeypatch.setattr(precision_gate, "MAX_INT8_ACCURACY_LOSS_POINTS", 100.0)  # a tiny random model may lose more
    options = int8_options(tmp_path, checkpoint, small_data)
    build(options, training_arguments(tmp_path / "run"))
    ensemble = Ensemble.read(options.repository)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    texts = sorted(validation_texts[:40], key=len)[::4]
    if VARIANTS[classifier].served_file == "model.onnx":  # the variant on ONNX Runtime: its int8 file
        onnx_session = onnx_export.open_session(ensemble.onnx_file)
        alone_logits = []
        for text in texts:
            encoded = tokenizer([text], truncation=True, max_length=ensemble.max_length, return_tensors="np")
            alone_logits.append(onnx_export.run(onnx_session, encoded["input_ids"], encoded["attention_mask"])[0])
        expected = softmax(np.array(alone_logits))
    else:
        eager = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
        int8 = torch.ao.quantization.quantize_dynamic(eager, {torch.nn.Linear}, dtype=torch.qint8)
        expected = softmax(predict_logits(int8, tokenizer, texts, ensemble.max_length, 1))
    server = start_server(options.repository, tmp_path, classifier=classifier)
    try:
        with EmotionClient(server.grpc_url) as client:
            labels = client.labels
            alone = [client.classify([text])[0] for text in texts]
            mixed = client.classify(texts)
    finally:
        server.stop()
    alone_scores = np.array([[p.scores[label] for label in labels] for p in alone])
    mixed_scores = np.array([[p.scores[label] for label in labels] for p in mixed])
    assert np.abs(alone_scores - expected).max() < 1e-4
    # The served label scores the in-process maximum: a tiny random model's int8 scores can be near-uniform
    # (on one CI machine 9 of 10 texts had their top two within 1e-4), and classes that close may swap with
    # the summation order of other thread counts, so a tie is allowed and nothing else.
    served_columns = [labels.index(p.label) for p in alone]
    served_expected = expected[np.arange(len(texts)), served_columns]
    assert (served_expected >= expected.max(axis=1) - 1e-4).all()
    assert np.abs(mixed_scores - expected).max() < INT8_MIXED_BATCH_TOLERANCE


def test_an_int8_file_that_fails_the_gate_is_installed_in_fp32_beside_one_that_passes(
    tmp_path, built_repository, small_data, monkeypatch
):
    _, checkpoint = built_repository("bert")
    monkeypatch.setattr(precision_gate, "MAX_INT8_ACCURACY_LOSS_POINTS", 100.0)
    gate = precision_gate.check

    def torch_int8_fails(what, fp32, int8):
        verdict = gate(what, fp32, int8)
        return verdict | {"passed": False} if what == "int8 model.pt" else verdict

    monkeypatch.setattr(precision_gate, "check", torch_int8_fails)
    options = int8_options(tmp_path, checkpoint, small_data)
    report = build(options, training_arguments(tmp_path / "run"))
    ensemble = Ensemble.read(options.repository)
    assert report["quantization"]["installed"] == "fp32" and report["onnx"]["quantization"]["installed"] == "int8"
    assert "quantized::linear_dynamic" not in str(torch.jit.load(str(ensemble.model_file)).inlined_graph)
    assert "validation_fp32" not in report, "the report's validation is the installed fp32 model.pt's"
    assert "DynamicQuantizeLinear" in operators(onnx.load(str(ensemble.onnx_file)).graph), "model.onnx is the int8 file"


def operators(graph) -> set[str]:
    return {node.op_type for node in graph.node}


def test_int8_that_loses_too_much_accuracy_is_never_installed(tmp_path, built_repository, small_data, monkeypatch):
    _, checkpoint = built_repository("bert")
    monkeypatch.setattr(precision_gate, "MAX_INT8_ACCURACY_LOSS_POINTS", -1.0)
    options = int8_options(tmp_path, checkpoint, small_data)
    with pytest.raises(QuantizationRefused, match="nothing was installed"):
        build(options, training_arguments(tmp_path / "run"))
    assert not Ensemble.read(options.repository).model_file.exists()
    options.data = None
    with pytest.raises(QuantizationRefused, match="needs --data"):
        build(options, training_arguments(tmp_path / "run"))


def token_counters(metrics_url: str) -> tuple[float, float]:
    """(real, computed) tokens the classifier reported so far, summed over the models that count them."""
    metrics = triton_metrics(metrics_url)
    return metric_total(metrics, REAL_TOKENS), metric_total(metrics, COMPUTED_TOKENS)


@pytest.mark.parametrize("classifier", CLASSIFIERS)
def test_classifier_counts_real_and_computed_tokens(served, classifier):
    server = served("distilbert", classifier)
    before = token_counters(server.metrics_url)
    with EmotionClient(server.grpc_url) as client:
        client.classify(["short one", "a much longer text that has many more tokens than the first one does"] * 4)
    real, computed = (after - start for after, start in zip(token_counters(server.metrics_url), before, strict=True))
    assert 0 < real <= computed
    # Rows are sorted by length before chunking: the 4 short and 4 long texts do not pad each other
    # unless they share a chunk, so at most one chunk mixes them.
    assert real / computed > 0.6


def test_the_libtorch_batcher_merges_concurrent_requests_of_different_lengths(served, validation_texts):
    """Triton's own statistics: requests of 16 different token lengths, sent at once, run in few executions.

    The production config's ragged batching at work (the Python variant batches without a window,
    so only under load; the benchmark measures both).
    """
    server = served("distilbert", "libtorch")
    by_length = {}
    with EmotionClient(server.grpc_url) as client:
        tokenizer = Tokenizer.from_file(str(server.ensemble.tokenizer_file))
        for text in validation_texts:
            by_length.setdefault(len(tokenizer.encode(text).ids), text)
        texts = [by_length[length] for length in sorted(by_length)[:32:2]]  # 16 texts, 16 distinct widths
        client.classify(texts[:1])  # connected and warm
        before = triton_metrics(server.metrics_url)
        barrier = threading.Barrier(len(texts))

        def send(text: str) -> None:
            barrier.wait(30)
            assert client.classify([text])[0].error is None

        with ThreadPoolExecutor(len(texts)) as pool:
            list(pool.map(send, texts))
    after = triton_metrics(server.metrics_url)
    model = server.ensemble.classifier
    requests = after[("nv_inference_count", model)] - before.get(("nv_inference_count", model), 0)
    executions = after[("nv_inference_exec_count", model)] - before.get(("nv_inference_exec_count", model), 0)
    assert requests == len(texts)
    # Every request has its own shape [1, width]: without ragged batching each would run alone.
    assert executions < requests / 2, f"{requests:.0f} requests in {executions:.0f} executions"


def test_benchmark_writes_json_markdown_and_plots(tmp_path, built_repository, small_data):
    _, checkpoint = built_repository("distilbert")
    options = BenchOptions(
        checkpoint=checkpoint,
        data=str(small_data / "validation.txt"),
        results=tmp_path / "bench",
        concurrency=[1, 2],
        batch_sizes=[1, 4],
        fastapi_concurrency=[2],
        seconds=0.5,
        in_process_texts=40,
        lone_requests=8,
        int8=False,
        response_cache_mb=0,  # its own test below
        container=False,  # tests/deployment/test_containers.py measures the phase on its deployment
    )
    results = run(options)
    written = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert written["summary"] == results["summary"]
    systems = {p["system"] for p in written["points"]}
    assert systems == {f"triton-{c}-fp32" for c in CLASSIFIERS} | {"fastapi+pipeline"}
    assert all(p["errors"] == 0 and p["texts"] > 0 for p in written["points"]), written["points"]
    triton = [p for p in written["points"] if p["system"].startswith("triton-")]
    assert all(p["avg_dynamic_batch"] >= 1 and 0 < p["padding_efficiency"] <= 1 for p in triton)
    for classifier in CLASSIFIERS:  # each variant measured side by side, in the same run
        assert written["summary"][f"{classifier}_fp32_best_texts_per_second"] > 0
        assert written["summary"][f"{classifier}_fp32_p50_ms_c1_b1"] > 0
    assert {r["batch_size"] for r in written["pipeline"]} == {1, 8, 32, 64}
    for key in (
        "served_fp32_vs_pipeline",
        "served_fp32_vs_sorted_eager",
        "served_fp32_batch4_vs_batch1",
        "served_fp32_p50_ms_c1_b1",
    ):
        assert written["summary"][key] > 0, key
    # ONNX Runtime in-process on the repository's own model.onnx, and each variant held to it.
    (reference,) = written["onnx_runtime"]
    assert reference["precision"] == "fp32" and reference["texts_per_second"] > 0 and reference["p50_ms_one_text"] > 0
    for classifier in CLASSIFIERS:
        ratio = written["summary"][f"{classifier}_fp32_texts_per_second_vs_onnx_runtime"]
        assert ratio == pytest.approx(
            written["summary"][f"{classifier}_fp32_best_texts_per_second"] / reference["texts_per_second"]
        )
        assert written["summary"][f"{classifier}_fp32_p50_vs_onnx_runtime"] > 0
    assert written["summary"]["best_served_fp32_p50_variant"] in CLASSIFIERS
    # Each step of a lone request, from Triton's per-model statistics: every request of the ensemble
    # went through each of its steps once, and the server's time fits in the client's.
    assert [r["system"] for r in written["lone_requests"]] == [f"triton-{c}-fp32" for c in CLASSIFIERS]
    for lone in written["lone_requests"]:
        steps = lone["steps"]
        ensemble = steps.pop(written["ensemble"])
        assert ensemble["requests"] == lone["requests"] == 8
        assert len(steps) == 3 and all(s["requests"] == lone["requests"] for s in steps.values()), lone
        busy = sum(s["queue"] + s["compute_input"] + s["compute_infer"] for s in steps.values())
        # The steps' work ends before the answer leaves; the ensemble's own end is stamped after its
        # response is handed to the front end, which a busy machine may schedule after the client has it.
        assert 0 < busy <= ensemble["total"] and busy < lone["mean_ms"], lone
    # Accuracy through each server over the whole file, against the eager fp32 model's labels.
    assert set(written["accuracy"]) == {f"triton-{c}-fp32" for c in CLASSIFIERS}
    for system, measured in written["accuracy"].items():
        assert measured["answered"] == measured["texts"] > 0, system
        assert measured["label_agreement_with_eager_fp32"] == 1.0, system  # fp32 serves the eager model's labels
        assert measured["accuracy_loss_points"] == pytest.approx(0.0, abs=1e-9), system
    markdown = (tmp_path / "bench" / "results.md").read_text()
    assert "| triton-libtorch-fp32 |" in markdown and "| ONNX Runtime fp32 (in-process" in markdown
    assert "hand-overs" in markdown
    for plot in ("throughput_latency.png", "lone_request_steps.png"):
        assert (tmp_path / "bench" / plot).read_bytes()[:4] == b"\x89PNG"


def test_model_table_measures_every_checkpoint_through_the_server(tmp_path, built_repository, small_data):
    built = [built_repository(family) for family in ("distilbert", "bert")]
    checkpoints = [checkpoint for _, checkpoint in built]
    assert checkpoints[0].name == checkpoints[1].name  # both "checkpoint": their repositories must not collide
    options = BenchOptions(checkpoint=Path(), data=str(small_data / "validation.txt"), results=tmp_path, seconds=0.5)
    rows = model_table(checkpoints, options)
    assert [row["model"] for row in rows] == [str(c) for c in checkpoints]
    for (repository, _), row in zip(built, rows, strict=True):
        # The build evaluated the same checkpoint in-process on the same validation texts.
        offline = json.loads((repository / "emotion_classifier" / "1" / "build_report.json").read_text())["validation"]
        one_text = 1.5 / offline["samples"]  # a near-tie of a tiny random model may flip one answer
        assert row["accuracy"] == pytest.approx(offline["accuracy"], abs=one_text)
        assert row["f1_weighted"] == pytest.approx(offline["f1_weighted"], abs=0.02)
        assert row["served_texts_per_second"] > 0 and row["concurrency"] in (8, 16)
    assert [row["model"] for row in json.loads((tmp_path / "models.json").read_text())] == [str(c) for c in checkpoints]
    table = (tmp_path / "models.md").read_text()
    assert all(f"| {c} | {row['accuracy']:.2%} |" in table for c, row in zip(checkpoints, rows, strict=True))
    assert (tmp_path / "repo-model1").is_dir() and (tmp_path / "repo-model2").is_dir()


def test_the_cache_benchmark_serves_repeats_from_the_cache_and_nothing_else(tmp_path, built_repository, small_data):
    """make bench's cache phase on a tiny model: cache off, no hits; cache on, the repeated share of
    each stream comes from the classifier's cache, and a stream of new texts gets no hit from an
    earlier point's texts (each point has its own slice)."""
    repository, _ = built_repository("distilbert")
    options = BenchOptions(results=tmp_path, seconds=0.5, response_cache_mb=4)
    points = sweep_response_cache(repository, read_file(small_data / "validation.txt").texts, options)
    assert len(points) == 2 * len(REPEAT_SHARES) * len(CONCURRENCY)
    assert all(p["errors"] == 0 and p["texts"] > 0 for p in points), points
    for point in points:
        hits = point["cache_hit_share"]
        if not point["response_cache_mb"]:
            assert hits is None, point  # no cache: Triton counts no lookup
        elif point["repeat_share"] == 0.0:
            assert hits == 0.0, point
        else:  # a repeat misses only while its first copy is still being computed
            assert point["repeat_share"] - 0.15 < hits <= point["repeat_share"] + 0.05, point
    summary = cache_summary(points)
    assert set(summary) == {
        f"cache_repeats{round(100 * share)}pct_c{clients}_{what}"
        for share in REPEAT_SHARES
        for clients in CONCURRENCY
        for what in ("texts_per_second_on_vs_off", "p50_on_vs_off")
    }
    assert "| triton-onnx-fp32, cache 4 MiB | 90% | 16 |" in cache_table(points)
    plot_response_cache(points, tmp_path)
    assert (tmp_path / "response_cache.png").read_bytes()[:4] == b"\x89PNG"
