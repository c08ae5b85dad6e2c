"""Claims that cannot drift: every default the README and the docs name (the local classifier
variant, ports, max_batch_size, queue sizes and timeouts, the batching window, the exit timeout, ...)
is checked against the file it comes from, and every link between the pages resolves."""

import inspect
import re
from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2

from emotion_triton import loadtest
from emotion_triton.build.pipeline import BuildOptions
from emotion_triton.build.torchscript_export import RaggedClassifier
from emotion_triton.repository import CLASSIFIER_CONFIGS, KEPT_VERSIONS, Ensemble, parameter
from emotion_triton.serving.local_server import DEFAULT_CLASSIFIER, ServerOptions
from emotion_triton.serving.supervisor import Supervision
from emotion_triton.serving.tritonserver_flags import TritonServerFlags

PROJECT = Path(__file__).resolve().parents[1]
README = PROJECT / "README.md"
DOCS = PROJECT / "docs"
ENSEMBLE = Ensemble.read()
CLASSIFIER = "emotion_classifier"
# The classifier's configurations by the name the docs give them.
CLASSIFIER_FILES = {"config.pbtxt": None, **{f"configs/{name}.pbtxt": name for name in CLASSIFIER_CONFIGS.values()}}


def text(path: Path) -> str:
    """The page with its line breaks as spaces: a claim may wrap."""
    return re.sub(r"\s+", " ", path.read_text())


def table_rows(path: Path, heading: str) -> list[list[str]]:
    """The cells of the rows of the first table under `heading` (the header row left out)."""
    lines = path.read_text().split(f"\n{heading}\n", 1)[1].splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i, line in enumerate(lines[first:], first) if not line.startswith("|")), len(lines))
    return [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines[first + 2 : end]]


def table(path: Path, heading: str) -> dict[str, list[str]]:
    """The same rows by their first cell."""
    rows = table_rows(path, heading)
    assert len({row[0] for row in rows}) == len(rows), f"{path.name}: two rows of one name under {heading}"
    return {row[0]: row[1:] for row in rows}


def makefile_default(name: str) -> str:
    (value,) = re.findall(rf"^{name} \?= *(\S*)$", (PROJECT / "Makefile").read_text(), re.MULTILINE)
    return value


def classifier_config(file: str):
    return ENSEMBLE.config(CLASSIFIER, CLASSIFIER_FILES[file])


def one(values: dict, what: str):
    """The value that all of `values` share; the docs give one number for them."""
    assert len(set(values.values())) == 1, f"the docs give one {what} for {sorted(values)}, the files differ: {values}"
    return next(iter(values.values()))


def all_configs() -> dict[str, object]:
    configs = {model: ENSEMBLE.config(model) for model in (ENSEMBLE.name, *ENSEMBLE.steps) if model != CLASSIFIER}
    return {**configs, **{f"{CLASSIFIER} {file}": classifier_config(file) for file in CLASSIFIER_FILES}}


def milliseconds(microseconds: int) -> str:
    return "0" if microseconds == 0 else f"{microseconds / 1000:g} ms"


def queue_policy(config):
    return config.dynamic_batching.default_queue_policy


# Each row of docs/configuration.md's defaults table: what its "default" cell must say, from the source.
def server_defaults() -> dict[str, str]:
    server, flags, supervision = ServerOptions(), TritonServerFlags(), Supervision()
    assert makefile_default("CLASSIFIER") == DEFAULT_CLASSIFIER == server.classifier
    ports = {}
    for name in ("http", "grpc", "metrics"):
        makefile = int(makefile_default(f"{name.upper()}_PORT"))
        ports[name] = one(
            {
                "Makefile": makefile,
                "ServerOptions": getattr(server, f"{name}_port"),
                "flags": getattr(flags, f"{name}_port"),
            },
            f"{name} port",
        )
    exit_timeout = one({"ServerOptions": server.exit_timeout, "TritonServerFlags": flags.exit_timeout}, "exit timeout")
    delays = {name: config.dynamic_batching.max_queue_delay_microseconds for name, config in all_configs().items()}
    production = one({f: delays[f"{CLASSIFIER} {f}"] for f in ("config.pbtxt", "configs/cpu.pbtxt")}, "window")
    onnx_variants = ("configs/onnx.pbtxt", "configs/onnxruntime.pbtxt")
    onnx_window = one({f: delays[f"{CLASSIFIER} {f}"] for f in onnx_variants}, "window")
    steps = one({m: delays[m] for m in ("emotion_tokenizer", "emotion_postprocess")}, "window")
    instances = {name: list(config.instance_group) for name, config in all_configs().items() if name != ENSEMBLE.name}
    count = one({name: tuple(group.count for group in groups) for name, groups in instances.items()}, "instance count")
    kinds = {name: {group.kind for group in groups} for name, groups in instances.items()}
    gpu = {name for name, kind in kinds.items() if kind == {model_config_pb2.ModelInstanceGroup.KIND_GPU}}
    assert gpu == {f"{CLASSIFIER} config.pbtxt"} and all(
        kinds[n] == {model_config_pb2.ModelInstanceGroup.KIND_CPU} for n in kinds.keys() - gpu
    )
    threads = one(
        {
            "cpu": parameter(classifier_config("configs/cpu.pbtxt"), "INTRA_OP_THREAD_COUNT"),
            "onnx": parameter(classifier_config("configs/onnx.pbtxt"), "intra_op_threads"),
            "onnxruntime": parameter(classifier_config("configs/onnxruntime.pbtxt"), "intra_op_thread_count"),
        },
        "thread count",
    )
    alone = parameter(classifier_config("configs/onnx.pbtxt"), "intra_op_threads_alone")
    chunking = inspect.signature(RaggedClassifier).parameters
    spread, tokens = chunking["max_length_spread"].default, chunking["max_tokens_per_forward"].default
    onnx = classifier_config("configs/onnx.pbtxt")
    assert float(parameter(onnx, "max_length_spread")) == spread
    assert int(parameter(onnx, "max_tokens_per_forward")) == tokens
    assert BuildOptions().max_length == ENSEMBLE.max_length
    assert "TRITON_ADMIN_KEY" in inspect.getsource(ServerOptions)
    return {
        "classifier variant": f"`{DEFAULT_CLASSIFIER}`",
        "address": f"`{server.host}`",
        "ports": f"HTTP {ports['http']}, gRPC {ports['grpc']}, metrics {ports['metrics']}",
        "exit timeout": f"{exit_timeout} s",
        "batching window": f"classifier {milliseconds(production)} (`config.pbtxt`, `configs/cpu.pbtxt`), "
        f"{milliseconds(onnx_window)} (`configs/onnx.pbtxt`, `configs/onnxruntime.pbtxt`); tokenizer, postprocess "
        f"{milliseconds(steps)}",
        "instances": f"{count[0]} per model (`KIND_GPU` in the production classifier `config.pbtxt`, `KIND_CPU` "
        "everywhere else)",
        "truncation length": f"{ENSEMBLE.max_length} tokens",
        "threads on the CPU": f"{threads} per instance (`INTRA_OP_THREAD_COUNT` in `configs/cpu.pbtxt`, "
        "`intra_op_threads` in `configs/onnx.pbtxt`, `intra_op_thread_count` in `configs/onnxruntime.pbtxt`); "
        f"in `configs/onnx.pbtxt` {alone} for a request that arrives while the server is idle "
        "(`intra_op_threads_alone`)",
        "chunking of a ragged batch": f"rows at most {spread:g}x (or 8 tokens) longer than the chunk's shortest, "
        f"at most {tokens} tokens a chunk",
        "admin key of the restricted APIs": "a random key per start",
        "response cache": f"{server.response_cache_mb} MiB" + (" (off)" if not server.response_cache_mb else ""),
        "kept versions": f"{KEPT_VERSIONS} built versions: the served one and the two before it",
        "inference canary": f"every {supervision.canary_interval:g} s, restart after {supervision.canary_failures} "
        f"failures, {supervision.canary_timeout:g} s for an answer, at most {supervision.max_restarts} restarts in "
        f"{supervision.restart_window / 60:g} minutes",
    }


def test_the_configuration_page_states_each_default_of_the_local_server_as_its_source_sets_it():
    rows = table(DOCS / "configuration.md", "## Defaults of the local server")
    expected = server_defaults()
    assert sorted(rows) == sorted(expected), "each row of the table needs its check here, each check its row"
    for setting, value in expected.items():
        assert rows[setting][0] == value, setting


def limits() -> dict[str, str]:
    batch = one({name: config.max_batch_size for name, config in all_configs().items()}, "max_batch_size")
    tokenizer = ENSEMBLE.config("emotion_tokenizer")
    text_bytes = int(parameter(tokenizer, "max_text_bytes"))
    assert text_bytes % 1024 == 0
    queues = {name: queue_policy(config) for name, config in all_configs().items() if name != ENSEMBLE.name}
    steps = ("emotion_tokenizer", "emotion_postprocess")
    step_queue = one({m: queues[m].max_queue_size for m in steps}, "queue size")
    production = one(
        {f: queues[f"{CLASSIFIER} {f}"].max_queue_size for f in ("config.pbtxt", "configs/cpu.pbtxt")}, "queue"
    )
    onnx_queue = one(
        {f: queues[f"{CLASSIFIER} {f}"].max_queue_size for f in ("configs/onnx.pbtxt", "configs/onnxruntime.pbtxt")},
        "queue",
    )
    step_timeout = one({m: queues[m].default_timeout_microseconds for m in steps}, "queue timeout")
    classifier_timeout = one(
        {f: queues[f"{CLASSIFIER} {f}"].default_timeout_microseconds for f in CLASSIFIER_FILES}, "queue timeout"
    )
    return {
        "texts per request": f"{batch} (`max_batch_size`, every `config.pbtxt`)",
        "bytes per text": f"{text_bytes // 1024} KiB (`max_text_bytes`, `emotion_tokenizer/config.pbtxt`); longer "
        f"token sequences are truncated to `max_length` ({ENSEMBLE.max_length})",
        "queued requests": f"tokenizer, postprocess {step_queue}; classifier {production} (`config.pbtxt`, "
        f"`configs/cpu.pbtxt`), {onnx_queue} (`configs/onnx.pbtxt`, `configs/onnxruntime.pbtxt`) (`max_queue_size`)",
        "time in a queue": f"tokenizer, postprocess {step_timeout / 1e6:g} s; classifier {classifier_timeout / 1e6:g} s, "
        "every variant (`default_timeout_microseconds`)",
    }


def test_the_limits_the_operations_page_states_are_those_of_the_model_configurations():
    rows = table(DOCS / "operations.md", "## Limits")
    for limit, value in limits().items():
        assert rows[limit][0] == value, limit
    batch, kib = ENSEMBLE.max_batch_size, int(parameter(ENSEMBLE.config("emotion_tokenizer"), "max_text_bytes")) // 1024
    for page in (DOCS / "operations.md", DOCS / "configuration.md"):
        assert set(re.findall(r"over (\d+) KiB", text(page))) <= {str(kib)}, page
        assert set(re.findall(r"batch over (\d+)", text(page))) <= {str(batch)}, page


def test_the_defaults_the_readme_and_operations_page_name_are_those_of_the_code():
    readme, operations = text(README), text(DOCS / "operations.md")
    server, supervision = ServerOptions(), Supervision()
    http, grpc, metrics = server.http_port, server.grpc_port, server.metrics_port
    assert f"HTTP on {server.host}:{http}, gRPC on {server.host}:{grpc}, metrics on {server.host}:{metrics}" in readme
    assert f"--protocol http --url {server.host}:{http}" in readme
    assert (
        f'EmotionClient("{server.host}:{grpc}")' in readme
        and f'EmotionClient("{server.host}:{http}", "http")' in readme
    )
    assert f"Host prefilled: {loadtest.DEFAULT_HOST}" in readme
    assert set(re.findall(rf"{re.escape(server.host)}:(\d+)", readme)) == {str(http), str(grpc), str(metrics)}
    assert f"truncation ({ENSEMBLE.max_length})" in readme and f"SCORES [n,{len(ENSEMBLE.labels)}]" in readme
    # The where-runs-what table: the default variant is `make serve`'s, each CLASSIFIER= its config.
    where = table_rows(
        README, "Where each classifier variant runs (the same fine-tuned weights everywhere: `model.pt`, and on"
    )
    commands = [command for *_, command in where]
    assert "`make serve`" in commands
    assert all(
        f"`make serve CLASSIFIER={name}`" in commands for name in CLASSIFIER_CONFIGS if name != DEFAULT_CLASSIFIER
    )
    for row, config, _, command in where:
        if command == "`make serve`":
            assert row.endswith("(default)") and config == f"`configs/{CLASSIFIER_CONFIGS[DEFAULT_CLASSIFIER]}.pbtxt`"
        elif variant := re.fullmatch(r"`make serve CLASSIFIER=(\w+)`", command):
            assert config.startswith(f"`configs/{CLASSIFIER_CONFIGS[variant[1]]}.pbtxt`") and "(default)" not in row
    assert f"(`--exit-timeout`, {server.exit_timeout} s;" in operations
    assert f"`--canary-interval` seconds ({supervision.canary_interval:g})" in operations
    assert f"`--canary-failures` failures ({supervision.canary_failures})" in operations
    assert (
        f"`--max-restarts` restarts ({supervision.max_restarts}) within {supervision.restart_window / 60:g} minutes"
        in operations
    )


PAGES = [README, *sorted(DOCS.glob("*.md")), PROJECT / "loadtest" / "README.md"]


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of a page's headings."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(PROJECT)))
def test_links_between_the_pages_resolve(page):
    """Every relative link names a file that exists, and a heading that exists on it (docs/deploy.md's
    headings are checked by tests/test_deploy.py's own documentation tests)."""
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"\w+://", target):
            continue
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        assert path.exists(), f"{page.name} links to {target}: no such file"
        if anchor and path.suffix == ".md" and path.name != "deploy.md":
            assert anchor in anchors(path), f"{page.name} links to {target}: no such heading"
