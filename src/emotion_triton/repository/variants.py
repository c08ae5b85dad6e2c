"""The classifier's variants, derived from its production config.pbtxt, and the served version's pins.

The production `emotion_classifier/config.pbtxt` (libtorch on GPUs) is the one source of the
classifier's inputs, outputs, batching, versions, cache and length buckets. Each CPU variant is
that file with the few fields below changed; `write_derived_configs` writes them as
`configs/<config name>.pbtxt` (selected by tritonserver --model-config-name), together with the
ensemble's configs that pin the served version (repository state, `.versions.json`), whenever a
server starts, a build installs or a roll-out serves another version. Derived files are never
tracked (.gitignore) and never edited: they cannot drift from their source.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

ModelConfig = model_config_pb2.ModelConfig
CPU_MAX_QUEUE_SIZE = 128


def _set_parameters(config: ModelConfig, drop: tuple[str, ...] = (), **values: str) -> None:
    for key in drop:
        del config.parameters[key]
    for key, value in values.items():
        config.parameters[key].string_value = value


def _on_cpu_instances(config: ModelConfig) -> None:
    """libtorch on CPU instances: the CPU twin of production (the device, threads and window differ)."""
    for group in config.instance_group:
        group.kind = model_config_pb2.ModelInstanceGroup.KIND_CPU
    # One torch thread per instance and one instance per core: two instances of two threads each spin
    # against each other on 2 cores (8 texts/s). On a bigger host, raise the instance count.
    _set_parameters(config, INTRA_OP_THREAD_COUNT="1", INTER_OP_THREAD_COUNT="1")
    # model.pt: fp32 (or int8), what a CPU computes fastest; the GPU's half-precision file is slower here.
    config.default_model_filename = "model.pt"
    # A request waits up to 5 ms for others to join its batch. Measured on this twin (2 cores, 16
    # concurrent one-text clients, two rounds each): 2 ms gave 4.8-5.1 requests per execution, 4 ms
    # 5.7-6.7, 5 ms 7.1-8.3, 6 ms 12.2; each millisecond of window costs texts/s at 16 clients (340,
    # 292-324, 269-273, 228-237) and latency at one (lab/runs/2026-12-03-two-variants).
    config.dynamic_batching.max_queue_delay_microseconds = 5000
    config.dynamic_batching.preferred_batch_size[:] = [16, 32, 64]


def _on_onnx_runtime(config: ModelConfig) -> None:
    """model.onnx on ONNX Runtime in a Python-backend model (1/onnx_model.py), on CPU instances."""
    config.platform = ""
    config.backend = "python"
    config.default_model_filename = "onnx_model.py"
    # The Python backend hands execute() the requests unmerged; onnx_model.py cuts the rows itself.
    del config.batch_input[:]
    _set_parameters(
        config,
        drop=("INFERENCE_MODE", "DISABLE_OPTIMIZED_EXECUTION"),
        # One ONNX Runtime thread per instance (idle ones sleep: they would spin on cores the other
        # instance and steps need), and both cores for a request that arrives while all is idle.
        intra_op_threads="1",
        intra_op_threads_alone="2",
    )
    batching = config.dynamic_batching
    # No window: a lone request never waits; under load requests pile up while both instances work.
    del batching.preferred_batch_size[:]
    batching.max_queue_delay_microseconds = 0
    # At most 128 queued requests (2x a load of 64 concurrent clients, never refused): two CPU cores drain
    # a deep queue slowly, so beyond it a request is refused at once instead of waiting, and a stop under
    # load has less to cancel (the CPU container's stop test, docs/deploy.md "Stopping under load").
    policy = batching.default_queue_policy
    policy.max_queue_size = min(policy.max_queue_size, CPU_MAX_QUEUE_SIZE)
    for group in config.instance_group:
        group.kind = model_config_pb2.ModelInstanceGroup.KIND_CPU


@dataclass(frozen=True)
class Variant:
    config_name: str  # tritonserver --model-config-name
    served_file: str  # the build's file it runs, in the classifier's version folder
    derive: Callable[[ModelConfig], None] | None  # None: config.pbtxt as it is


# The classifier on each kind of host. `make serve CLASSIFIER=` and the CPU container choose among the
# CPU ones; the GPU container serves production.
VARIANTS = {
    "production": Variant("gpu", "model_gpu.pt", None),
    "libtorch": Variant("cpu", "model.pt", _on_cpu_instances),
    "onnx": Variant("onnx", "model.onnx", _on_onnx_runtime),
}
CPU_VARIANTS = ("libtorch", "onnx")
# The fastest CPU variant measured (docs/performance.md): `make serve`'s and the CPU container's.
DEFAULT_CLASSIFIER = "onnx"
# Repository state beside the models (never tracked): the served version and the highest version
# ever installed. A file, not a folder: tritonserver takes every folder of the repository for a model.
STATE_FILE = ".versions.json"
GENERATED_HEADER = (
    "# Generated by emotion_triton.repository.variants from ../config.pbtxt{what}: edit that file (or the\n"
    "# variant's changes there), never this one; it is rewritten whenever a server starts or a build installs.\n"
)


def parse(path: Path) -> ModelConfig:
    return text_format.Parse(Path(path).read_text(), ModelConfig())


def derived_classifier_config(production: ModelConfig, variant: str) -> ModelConfig:
    config = ModelConfig()
    config.CopyFrom(production)
    derive = VARIANTS[variant].derive
    if derive is not None:
        derive(config)
    return config


def read_state(repository: Path) -> dict:
    try:
        return json.loads((Path(repository) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def write_state(repository: Path, **changes: int) -> None:
    path = Path(repository) / STATE_FILE
    state = {**read_state(repository), **changes}
    path.with_name(path.name + ".tmp").write_text(json.dumps(state, indent=2) + "\n")
    os.replace(path.with_name(path.name + ".tmp"), path)


def write_derived_configs(
    repository: Path, ensemble: str, classifier: str, versioned: tuple[str, ...], served: int | None
) -> list[Path]:
    """Writes every variant's classifier config and, with `served`, the ensemble's pinned configs."""
    repository = Path(repository)
    written = []
    production = parse(repository / classifier / "config.pbtxt")
    for name, variant in VARIANTS.items():
        if variant.derive is not None:
            text = text_format.MessageToString(derived_classifier_config(production, name))
            written.append(_write(repository / classifier / "configs" / f"{variant.config_name}.pbtxt", name, text))
    source = parse(repository / ensemble / "config.pbtxt")
    for variant in VARIANTS.values():
        path = repository / ensemble / "configs" / f"{variant.config_name}.pbtxt"
        if served is None:  # unpinned: the ensemble's config.pbtxt (-1, the newest version) serves
            path.unlink(missing_ok=True)
            continue
        pinned = ModelConfig()
        pinned.CopyFrom(source)
        for step in pinned.ensemble_scheduling.step:
            if step.model_name in versioned:
                step.model_version = served
        written.append(_write(path, f"served version {served}", text_format.MessageToString(pinned)))
    return written


def _write(path: Path, what: str, text: str) -> Path:
    path.parent.mkdir(exist_ok=True)
    path.with_name(path.name + ".tmp").write_text(GENERATED_HEADER.format(what=f" ({what})") + text)
    os.replace(path.with_name(path.name + ".tmp"), path)
    return path
