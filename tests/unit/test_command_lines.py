"""The emotion-* commands' options are their dataclasses' fields (emotion_triton.command_line): every flag
that the Makefile, the README, the docs and the tests use reads into its field, a bare run gives the
dataclasses' defaults, and bad options exit with 2."""

import io
from dataclasses import asdict
from pathlib import Path

import pytest

from emotion_lab.perf import soak
from emotion_lab.perf.bench_phases import BenchOptions
from emotion_lab.perf.benchmark import parse_arguments
from emotion_triton.client import classify
from emotion_triton.command_line import parse
from emotion_triton.commands import evaluate, serve
from emotion_triton.evaluation.server_accuracy import EvaluationOptions
from emotion_triton.repository import DEFAULT_CHECKPOINT
from emotion_triton.serving.local_server import ServerOptions
from emotion_triton.serving.supervisor import ServeCommand, Supervision


def without_key(options: ServerOptions) -> dict:
    return {name: value for name, value in asdict(options).items() if name != "admin_key"}


def test_serve_reads_every_flag_and_defaults_to_the_dataclasses():
    command = parse(
        ServeCommand,
        [
            *("--repository", "repo", "--classifier", "libtorch", "--host", "0.0.0.0"),
            *("--http-port", "9000", "--grpc-port", "9001", "--metrics-port", "9002"),
            *("--exit-timeout", "3", "--log-file", "triton.log", "--canary-interval", "0.5"),
            *("--canary-failures", "4", "--canary-timeout", "2", "--max-restarts", "1"),
        ],
        None,
    )
    server, supervision = command.server, command.supervision
    assert (server.repository, server.classifier, server.host) == (Path("repo"), "libtorch", "0.0.0.0")
    assert (server.http_port, server.grpc_port, server.metrics_port) == (9000, 9001, 9002)
    assert (server.exit_timeout, server.log_file) == (3, Path("triton.log"))
    assert supervision == Supervision(canary_interval=0.5, canary_failures=4, canary_timeout=2.0, max_restarts=1)
    bare = parse(ServeCommand, [], None)
    assert without_key(bare.server) == without_key(ServerOptions()) and bare.supervision == Supervision()


def test_the_admin_key_is_no_option_and_stays_out_of_the_help(monkeypatch, capsys):
    monkeypatch.setenv("TRITON_ADMIN_KEY", "not-for-the-help")
    with pytest.raises(SystemExit) as end:
        parse(ServeCommand, ["--help"], None)
    assert end.value.code == 0
    assert "not-for-the-help" not in capsys.readouterr().out
    assert parse(ServeCommand, [], None).server.admin_key == "not-for-the-help"


def test_soak_reads_every_flag():
    command = parse(
        soak.SoakCommand,
        [
            *("--repository", "repo", "--classifier", "libtorch", "--seconds", "3", "--warmup", "1"),
            *("--concurrency", "4", "--bad-share", "0.2", "--max-rss-growth-mib", "5"),
            *("--max-shm-growth-mib", "6", "--seed", "7", "--json"),
        ],
        None,
    )
    assert command.json and command.soak == soak.SoakOptions(
        repository=Path("repo"),
        classifier="libtorch",
        seconds=3.0,
        warmup=1.0,
        concurrency=4,
        bad_share=0.2,
        max_rss_growth_mib=5.0,
        max_shm_growth_mib=6.0,
        seed=7,
    )
    assert parse(soak.SoakCommand, [], None) == soak.SoakCommand()


def test_bench_reads_every_flag_and_its_checkpoint_default_depends_on_models():
    options, models = parse_arguments(
        [
            *("--checkpoint", "ckpt", "--models", "a", "b", "--data", "texts.txt", "--results", "out"),
            *("--concurrency", "1", "2", "--batch-sizes", "4", "--seconds", "0.5", "--lone-requests", "3"),
            *("--no-int8", "--no-fastapi", "--classifiers", "onnx", "libtorch"),
        ]
    )
    assert models == [Path("a"), Path("b")]
    assert options == BenchOptions(
        checkpoint=Path("ckpt"),
        data="texts.txt",
        results=Path("out"),
        concurrency=[1, 2],
        batch_sizes=[4],
        seconds=0.5,
        lone_requests=3,
        int8=False,
        fastapi=False,
        classifiers=["onnx", "libtorch"],
    )
    assert parse_arguments([]) == (BenchOptions(checkpoint=DEFAULT_CHECKPOINT), None)
    assert parse_arguments(["--models", "a"]) == (BenchOptions(checkpoint=None), [Path("a")])


@pytest.mark.parametrize(
    ("arguments", "compare_with"),
    [
        (["data.txt"], None),
        (["data.txt", "--compare-with"], str(DEFAULT_CHECKPOINT)),
        (["data.txt", "--compare-with", "--json"], str(DEFAULT_CHECKPOINT)),
        (["data.txt", "--compare-with", "runs/x/checkpoint", "--json"], "runs/x/checkpoint"),
        (["--compare-with", "runs/x/checkpoint", "data.txt"], "runs/x/checkpoint"),
    ],
)
def test_evaluate_compare_with_takes_an_optional_checkpoint(arguments, compare_with):
    options = parse(EvaluationOptions, arguments, None)
    assert (options.source, options.compare_with, options.as_json) == ("data.txt", compare_with, "--json" in arguments)


def test_evaluate_reads_every_flag():
    options = parse(
        EvaluationOptions,
        [
            *("data", "--split", "test", "--url", "host:1", "--protocol", "http", "--model", "m"),
            *("--batch-size", "8", "--concurrency", "2", "--timeout", "1.5", "--report-dir", "report"),
        ],
        None,
    )
    assert options == EvaluationOptions(
        source="data",
        split="test",
        url="host:1",
        protocol="http",
        model="m",
        batch_size=8,
        concurrency=2,
        timeout=1.5,
        report_dir=Path("report"),
    )


def test_classify_reads_every_flag():
    options = parse(
        classify.ClassifyOptions,
        [
            *("--text", "i feel great", "--text", "i am scared", "--file", "texts.txt", "--url", "host:1"),
            *("--protocol", "http", "--model", "m", "--timeout", "2", "--json"),
        ],
        None,
    )
    assert options == classify.ClassifyOptions(
        texts=["i feel great", "i am scared"],
        file="texts.txt",
        url="host:1",
        protocol="http",
        model="m",
        timeout=2.0,
        json=True,
    )


def test_classify_without_text_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert classify.main([]) == 2
    assert capsys.readouterr().err == "error: no text: use --text, --file or standard input\n"


def main_of(command: str):
    return {
        "serve": serve.main,
        "soak": soak.main,
        "bench": lambda argv: parse_arguments(argv),
        "evaluate": evaluate.main,
        "classify": classify.main,
    }[command]


@pytest.mark.parametrize("command", ["serve", "soak", "bench", "evaluate", "classify"])
@pytest.mark.parametrize(
    "arguments",
    [["--no-such-flag"], ["data.txt", "--protocol", "smoke-signals"], ["--classifier", "tensorflow"]],
    ids=["unknown-flag", "bad-choice", "bad-classifier"],
)
def test_bad_options_exit_with_2(command, arguments, capsys):
    with pytest.raises(SystemExit) as end:
        main_of(command)(arguments)
    assert end.value.code == 2
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("command", ["serve", "soak", "bench", "evaluate", "classify"])
def test_help_exits_with_0(command, capsys):
    with pytest.raises(SystemExit) as end:
        main_of(command)(["--help"])
    assert end.value.code == 0
    assert "usage:" in capsys.readouterr().out
