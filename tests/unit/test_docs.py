"""Claims that cannot drift: every default the README and the docs name (the local classifier
variant, ports, max_batch_size, queue sizes and timeouts, the batching window, the length buckets,
the exit timeout, ...) is checked against the file it comes from; the variants, configurations and
files the pages name exist; docs/performance.md's numbers are those of the latest run in lab/runs/;
and every link between the pages resolves, to a heading that exists."""

import fnmatch
import inspect
import json
import re
from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2

from emotion_lab import loadtest
from emotion_triton.build.pipeline import BuildOptions
from emotion_triton.repository import (
    BUILD_OUTPUTS,
    CLASSIFIER_CONFIGS,
    DEFAULT_CLASSIFIER,
    KEPT_VERSIONS,
    VARIANTS,
    Ensemble,
    parameter,
)
from emotion_triton.serving.local_server import ServerOptions
from emotion_triton.serving.supervisor import Supervision
from emotion_triton.serving.tritonserver_flags import TritonServerFlags

PROJECT = Path(__file__).resolve().parents[2]
README = PROJECT / "README.md"
DOCS = PROJECT / "docs"
RUNS = PROJECT / "lab" / "runs"
ENSEMBLE = Ensemble.read()
CLASSIFIER = "emotion_classifier"
# The classifier's configurations by the name the docs give them: the production config.pbtxt and the
# CPU variants derived from it (configs/<name>.pbtxt, generated: Ensemble.config derives them in memory).
CLASSIFIER_FILES = {"config.pbtxt": None, **{f"configs/{name}.pbtxt": name for name in CLASSIFIER_CONFIGS.values()}}
CPU_TWIN, ONNX = f"configs/{CLASSIFIER_CONFIGS['libtorch']}.pbtxt", f"configs/{CLASSIFIER_CONFIGS['onnx']}.pbtxt"


def text(path: Path) -> str:
    """The page with its line breaks as spaces: a claim may wrap."""
    return re.sub(r"\s+", " ", path.read_text())


def table_with_header(path: Path, heading: str) -> list[list[str]]:
    """The cells of the rows of the first table under `heading`, its header row first."""
    lines = path.read_text().split(f"\n{heading}\n", 1)[1].splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i, line in enumerate(lines[first:], first) if not line.startswith("|")), len(lines))
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines[first:end]]
    return rows[:1] + rows[2:]


def table_rows(path: Path, heading: str) -> list[list[str]]:
    """The cells of the rows of the first table under `heading` (the header row left out)."""
    return table_with_header(path, heading)[1:]


def table(path: Path, heading: str) -> dict[str, list[str]]:
    """The same rows by their first cell."""
    rows = table_rows(path, heading)
    assert len({row[0] for row in rows}) == len(rows), f"{path.name}: two rows of one name under {heading}"
    return {row[0]: row[1:] for row in rows}


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
    if microseconds == 0:
        return "0"
    return f"{microseconds / 1000:g} ms" if microseconds >= 1000 else f"{microseconds} us"


def queue_policy(config):
    return config.dynamic_batching.default_queue_policy


# Each row of docs/configuration.md's defaults table: what its "default" cell must say, from the source.
def server_defaults() -> dict[str, str]:
    server, flags, supervision = ServerOptions(), TritonServerFlags(), Supervision()
    assert server.classifier == DEFAULT_CLASSIFIER
    ports = {name: getattr(server, f"{name}_port") for name in ("http", "grpc", "metrics")}
    exit_timeout = one({"ServerOptions": server.exit_timeout, "TritonServerFlags": flags.exit_timeout}, "exit timeout")
    delays = {name: config.dynamic_batching.max_queue_delay_microseconds for name, config in all_configs().items()}
    production, cpu_twin = delays[f"{CLASSIFIER} config.pbtxt"], delays[f"{CLASSIFIER} {CPU_TWIN}"]
    onnx_window = delays[f"{CLASSIFIER} {ONNX}"]
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
            "cpu": parameter(classifier_config(CPU_TWIN), "INTRA_OP_THREAD_COUNT"),
            "onnx": parameter(classifier_config(ONNX), "intra_op_threads"),
        },
        "thread count",
    )
    alone = parameter(classifier_config(ONNX), "intra_op_threads_alone")
    # The length buckets: parameters of the production config.pbtxt (1/length_buckets.py reads them).
    buckets = classifier_config("config.pbtxt")
    spread, slack, tokens = (
        float(parameter(buckets, "max_length_spread")),
        int(parameter(buckets, "min_length_slack")),
        int(parameter(buckets, "max_tokens_per_forward")),
    )
    assert BuildOptions().max_length == ENSEMBLE.max_length
    assert "TRITON_ADMIN_KEY" in inspect.getsource(ServerOptions)
    return {
        "classifier variant": f"`{DEFAULT_CLASSIFIER}`",
        "address": f"`{server.host}`",
        "ports": f"HTTP {ports['http']}, gRPC {ports['grpc']}, metrics {ports['metrics']}",
        "exit timeout": f"{exit_timeout} s",
        "batching window": f"classifier {milliseconds(production)} (`config.pbtxt`, a GPU), "
        f"{milliseconds(cpu_twin)} (`{CPU_TWIN}`), {milliseconds(onnx_window)} (`{ONNX}`); tokenizer, postprocess "
        f"{milliseconds(steps)}",
        "instances": f"{count[0]} per model (`KIND_GPU` in the production classifier `config.pbtxt`, `KIND_CPU` "
        "everywhere else)",
        "truncation length": f"{ENSEMBLE.max_length} tokens",
        "threads on the CPU": f"{threads} per instance (`INTRA_OP_THREAD_COUNT` in `{CPU_TWIN}`, "
        f"`intra_op_threads` in `{ONNX}`); in `{ONNX}` {alone} for a request that arrives while the server is "
        "idle (`intra_op_threads_alone`)",
        "chunking of a ragged batch": f"rows at most {spread:g}x (or {slack} tokens) longer than the chunk's "
        f"shortest, at most {tokens} tokens a chunk",
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
    classifier_queue = one({f: queues[f"{CLASSIFIER} {f}"].max_queue_size for f in ("config.pbtxt", CPU_TWIN)}, "queue")
    onnx_queue = queues[f"{CLASSIFIER} {ONNX}"].max_queue_size
    step_timeout = one({m: queues[m].default_timeout_microseconds for m in steps}, "queue timeout")
    classifier_timeout = one(
        {f: queues[f"{CLASSIFIER} {f}"].default_timeout_microseconds for f in CLASSIFIER_FILES}, "queue timeout"
    )
    return {
        "texts per request": f"{batch} (`max_batch_size`, every `config.pbtxt`)",
        "bytes per text": f"{text_bytes // 1024} KiB (`max_text_bytes`, `emotion_tokenizer/config.pbtxt`); longer "
        f"token sequences are truncated to `max_length` ({ENSEMBLE.max_length})",
        "queued requests": f"tokenizer, postprocess {step_queue}; classifier {classifier_queue} (`config.pbtxt`, "
        f"`{CPU_TWIN}`), {onnx_queue} (`{ONNX}`) (`max_queue_size`)",
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
            assert variant[1] in CLASSIFIER_CONFIGS, f"the README names a variant that does not exist: {command}"
            assert config.startswith(f"`configs/{CLASSIFIER_CONFIGS[variant[1]]}.pbtxt`") and "(default)" not in row
    assert f"(`--exit-timeout`, {server.exit_timeout} s;" in operations
    assert f"`--canary-interval` seconds ({supervision.canary_interval:g})" in operations
    assert f"`--canary-failures` failures ({supervision.canary_failures})" in operations
    assert (
        f"`--max-restarts` restarts ({supervision.max_restarts}) within {supervision.restart_window / 60:g} minutes"
        in operations
    )


PAGES = [README, *sorted(DOCS.glob("*.md")), PROJECT / "loadtest" / "README.md"]
# History and dated runs name what was, not what is: only their links are checked.
RECORDS = [PROJECT / "CHANGELOG.md", *sorted(RUNS.glob("**/README.md"))]
PAGE_IDS = {"ids": lambda page: str(page.relative_to(PROJECT))}


@pytest.mark.parametrize("page", PAGES, **PAGE_IDS)
def test_the_variants_and_configurations_a_page_names_exist(page):
    """A `CLASSIFIER=`, a `--model-config-name=` or a classifier `configs/<name>.pbtxt` names one that
    exists (the CPU variants are generated from the production config.pbtxt: variants.py)."""
    content = page.read_text()
    for name in re.findall(r"CLASSIFIER=([a-z]\w*)", content):
        assert name in CLASSIFIER_CONFIGS, f"{page.name} names CLASSIFIER={name}: no such variant"
    config_names = {variant.config_name for variant in VARIANTS.values()}
    for name in re.findall(r"--model-config-name=([a-z]\w*)", content):
        assert name in config_names, f"{page.name} names --model-config-name={name}: no such configuration"
    for name in re.findall(r"configs/([a-z]\w*)\.pbtxt", content):
        assert name in CLASSIFIER_CONFIGS.values(), f"{page.name} names configs/{name}.pbtxt: no such configuration"


def named_paths(content: str) -> set[str]:
    """The project's paths a page names in backticks, and those of the model repository by model name."""
    paths = set()
    models = {ENSEMBLE.name, *ENSEMBLE.steps}
    roots = ("src", "lab", "model_repository", "tools", "build", "docker", "deploy", "client", "loadtest", "tests")
    for path in re.findall(r"`([\w./:-]+)`", content):
        first = path.split("/", 1)[0]
        if "/" in path and first in roots:
            paths.add(path)
        elif "/" in path and first in models:
            paths.add(f"model_repository/{path}")
        elif re.fullmatch(r"1/\w+\.py", path):  # a module of a model's version folder
            paths.add(path)
    return paths


@pytest.mark.parametrize("page", PAGES, **PAGE_IDS)
def test_the_files_a_page_names_exist(page):
    """Every source file, folder or configuration a page names exists (build outputs, generated
    configurations and version folders above 1 excepted: they are written by the build or a server)."""
    models = sorted((PROJECT / "model_repository").glob("*/1"))
    for path in named_paths(page.read_text()):
        name = path.rstrip("/").rsplit("/", 1)[-1]
        if any(fnmatch.fnmatch(name, pattern) for pattern in BUILD_OUTPUTS) or "/configs/" in path:
            continue
        if re.search(r"/(N|[2-9]\d*)(/|$)", path):  # a built version
            continue
        if path.startswith("1/"):
            assert any((folder / path[2:]).exists() for folder in models), f"{page.name} names {path}: no model has it"
        else:
            assert (PROJECT / path.split("::")[0]).exists(), f"{page.name} names {path}: no such file"


def test_the_tokenizer_pads_each_request_to_its_longest_text_as_the_docs_say():
    tokenizer = (PROJECT / "model_repository" / ENSEMBLE.tokenizer / "1" / "model.py").read_text()
    padding = re.findall(r"enable_padding\(([^)]*)\)", tokenizer)
    assert padding and not any("length" in arguments or "multiple" in arguments for arguments in padding)
    assert "each request is padded to its own longest text" in text(DOCS / "model-repository.md")
    assert "pads a request only to its own longest text" in text(DOCS / "performance.md")
    for page in PAGES:
        assert "multiple of 16" not in text(page), page.name


def latest_bench_run() -> Path:
    """The newest dated run of `make bench` in lab/runs/ (a folder holding its results.json)."""
    return max((path.parent for path in RUNS.glob("*/results.json")), key=lambda folder: folder.name[:10])


def test_the_performance_page_is_made_from_the_latest_bench_run():
    """docs/performance.md names the newest run of lab/runs/ and its one-text table is that run's: each
    cell "texts/s / p50 ms" of each variant and precision it shows, a variant that serves today."""
    page, run = DOCS / "performance.md", latest_bench_run()
    assert f"lab/runs/{run.name}" in page.read_text()
    results = json.loads((run / "results.json").read_text())
    points = {(p["system"], p["concurrency"]): p for p in results["points"] if p["batch_size"] == 1}
    header, *rows = table_with_header(page, "## One text per request")
    assert header[0] == "clients" and rows
    for row in rows:
        clients = int(row[0])
        for column, cell in zip(header[1:], row[1:], strict=True):
            variant, precision = column.strip("*").split()
            cell = cell.strip("*")
            assert variant in CLASSIFIER_CONFIGS, f"performance.md shows {variant}, which no longer serves"
            point = points[(f"triton-{variant}-{precision}", clients)]
            assert cell == f"{point['texts_per_second']:.1f} / {point['p50_ms']:.1f}", (column, clients)


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of a page's headings."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("page", PAGES + RECORDS, **PAGE_IDS)
def test_links_between_the_pages_resolve(page):
    """Every relative link names a file that exists, and a heading that exists on it."""
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"\w+://", target):
            continue
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        assert path.exists(), f"{page.name} links to {target}: no such file"
        if anchor and path.suffix == ".md":
            assert anchor in anchors(path), f"{page.name} links to {target}: no such heading"
