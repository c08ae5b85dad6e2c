"""The model repository's configs: parsed by Triton's own protobuf, consistent with each other."""

import ast
import json
import sys
from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2

from emotion_triton.repository import CLASSIFIER_CONFIGS, DEFAULT_REPOSITORY, Ensemble, parse_config, set_parameter

# Besides Python's standard library: what Triton's Python (the container's too) has.
ALLOWED_IMPORTS = {"numpy", "torch", "tokenizers", "triton_python_backend_utils"}


def all_configs():
    return sorted(DEFAULT_REPOSITORY.glob("*/config.pbtxt")) + sorted(DEFAULT_REPOSITORY.glob("*/configs/*.pbtxt"))


@pytest.mark.parametrize("path", all_configs(), ids=lambda p: str(p.relative_to(DEFAULT_REPOSITORY)))
def test_every_config_parses_with_tritons_protobuf(path):
    config = parse_config(path)
    assert config.name == path.parent.name if path.parent.name != "configs" else path.parent.parent.name


def test_ensemble_contract():
    ensemble = Ensemble.read()
    config = ensemble.config(ensemble.name)
    assert config.platform == "ensemble"
    assert config.max_batch_size > 1
    assert [(i.name, i.data_type) for i in config.input] == [("TEXT", model_config_pb2.TYPE_STRING)]
    assert [(o.name, o.data_type) for o in config.output] == [
        ("LABEL", model_config_pb2.TYPE_STRING),
        ("SCORES", model_config_pb2.TYPE_FP32),
    ]
    assert ensemble.labels == ["sadness", "joy", "love", "anger", "fear", "surprise"]
    assert ensemble.max_length == 128


def test_ensemble_steps_wire_existing_tensors():
    ensemble = Ensemble.read()
    config = ensemble.config(ensemble.name)
    produced = {i.name for i in config.input}
    for step in config.ensemble_scheduling.step:
        for variant in (None, *CLASSIFIER_CONFIGS.values()):
            path = ensemble.config_path(step.model_name, variant)
            if not path.exists():
                continue
            model = parse_config(path)
            assert config.max_batch_size <= model.max_batch_size, step.model_name
            assert set(step.input_map) == {i.name for i in model.input}, step.model_name
            assert set(step.output_map) <= {o.name for o in model.output}, step.model_name
            assert set(step.input_map.values()) <= produced, step.model_name
        produced |= set(step.output_map.values())
    assert {o.name for o in config.output} <= produced


def declared(tensors):
    return [(t.name, t.data_type, list(t.dims), getattr(t, "allow_ragged_batch", False)) for t in tensors]


def test_production_classifier_takes_ragged_batches_on_the_libtorch_backend():
    ensemble = Ensemble.read()
    production = ensemble.config(ensemble.classifier)
    assert production.platform == "pytorch_libtorch"
    assert production.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert production.HasField("dynamic_batching")
    # Requests of every length batch together; the graph gets each row's width to cut them apart.
    assert all(t.allow_ragged_batch for t in production.input)
    (widths,) = production.batch_input
    assert widths.kind == model_config_pb2.BatchInput.BATCH_ITEM_SHAPE
    assert list(widths.source_input) == [production.input[0].name]
    # libtorch maps tensors to forward() arguments by their __<index> suffix, batch inputs after inputs
    names = [i.name for i in production.input] + list(widths.target_name)
    assert [name.rsplit("__", 1)[1] for name in names] == ["0", "1", "2"]
    assert [o.name.rsplit("__", 1)[1] for o in production.output] == ["0", "1"]


def test_the_cpu_config_is_the_production_config_on_cpu_instances():
    """What `make serve` and the CPU container run is what the GPU runs: only the device and threads differ."""
    ensemble = Ensemble.read()
    production = ensemble.config(ensemble.classifier)
    cpu = ensemble.config(ensemble.classifier, CLASSIFIER_CONFIGS["libtorch"])
    assert [g.kind for g in cpu.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_CPU]
    threads = {"INTRA_OP_THREAD_COUNT", "INTER_OP_THREAD_COUNT"}
    assert threads <= set(cpu.parameters)
    for config in (production, cpu):
        del config.instance_group[:]
        for key in threads:
            config.parameters.pop(key, None)
    assert cpu == production


def test_the_onnx_variants_declare_the_production_contract():
    ensemble = Ensemble.read()
    production = ensemble.config(ensemble.classifier)
    native = ensemble.config(ensemble.classifier, CLASSIFIER_CONFIGS["onnxruntime"])
    python = ensemble.config(ensemble.classifier, CLASSIFIER_CONFIGS["onnx"])
    assert native.platform == "onnxruntime_onnx" and python.backend == "python"
    for variant in (native, python):
        assert variant.HasField("dynamic_batching")
        assert declared(production.input) == declared(variant.input)
        assert declared(production.output) == declared(variant.output)
        assert production.max_batch_size == variant.max_batch_size
    assert native.batch_input == production.batch_input  # the graph reads ROW_WIDTHS__2 as model.pt's does
    assert not python.batch_input  # onnx_model.py builds ROW_WIDTHS__2 from the requests itself


def test_every_batching_model_has_a_bounded_queue():
    for path in all_configs():
        config = parse_config(path)
        if config.HasField("dynamic_batching"):
            policy = config.dynamic_batching.default_queue_policy
            assert policy.max_queue_size > 0, path
            assert policy.default_timeout_microseconds > 0, path


# The runtime a variant's own model file adds, installed in the image that serves that variant.
VARIANT_IMPORTS = {"onnx_model.py": {"onnxruntime"}}


@pytest.mark.parametrize(
    "path", sorted(DEFAULT_REPOSITORY.glob("*/1/*.py")), ids=lambda p: f"{p.parent.parent.name}/{p.name}"
)
def test_python_models_import_only_what_tritons_python_has(path):
    tree = ast.parse(path.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    siblings = {sibling.stem for sibling in path.parent.glob("*.py")}  # the backend puts the folder on sys.path
    allowed = ALLOWED_IMPORTS | siblings | VARIANT_IMPORTS.get(path.name, set())
    assert imported - sys.stdlib_module_names <= allowed


def test_set_parameter_keeps_comments_and_round_trips(tmp_path):
    path = tmp_path / "config.pbtxt"
    source = DEFAULT_REPOSITORY / "emotion_postprocess" / "config.pbtxt"
    path.write_text(source.read_text())
    labels = ['a "quoted" label', "b,with,commas", "ü"]
    set_parameter(path, "labels", json.dumps(labels))
    assert json.loads(parse_config(path).parameters["labels"].string_value) == labels
    assert path.read_text().count("#") == source.read_text().count("#")
    with pytest.raises(ValueError, match="no_such_key"):
        set_parameter(path, "no_such_key", "1")


def test_build_outputs_are_not_committed():
    ignored = (Path(__file__).resolve().parents[1] / ".gitignore").read_text()
    for pattern in ("model_repository/*/1/*.pt", "model_repository/*/1/tokenizer.json"):
        assert pattern in ignored
