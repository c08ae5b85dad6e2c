"""The Triton model repository: its config.pbtxt files are the one source of truth.

Model names, inputs, outputs, labels and batching limits are read from the
configurations here, parsed with Triton's own protobuf definitions.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from ..paths import PROJECT_ROOT

DEFAULT_REPOSITORY = PROJECT_ROOT / "model_repository"
# A build's run folder is runs/<preset>/; the offline preset's checkpoint is where the benchmark and
# the evaluation's --compare-with look when given no path.
RUNS_DIR = PROJECT_ROOT / "runs"
OFFLINE_PRESET = "minilm-offline"
DEFAULT_CHECKPOINT = RUNS_DIR / OFFLINE_PRESET / "checkpoint"
OFFLINE_BUILD_COMMAND = f"python build/build.py --preset {OFFLINE_PRESET}"
DEFAULT_ENSEMBLE = "emotion"
# The classifier variants a CPU host serves: variant -> the tritonserver --model-config-name that
# selects it (emotion_classifier/configs/<name>.pbtxt; the other models keep their config.pbtxt).
CLASSIFIER_CONFIGS = {
    "libtorch": "cpu",  # the production config.pbtxt on CPU instances: Triton's PyTorch backend
    "onnx": "onnx",  # model.onnx on ONNX Runtime inside a Python-backend model
    "onnxruntime": "onnxruntime",  # model.onnx on Triton's ONNX Runtime backend
}


# Written by build/build.py; never part of a repository's source (see .gitignore).
BUILD_OUTPUTS = ("*.pt", "*.onnx", "tokenizer.json", "build_report.json", "*.png", "__pycache__")


def copy_sources(target: str | Path, source: str | Path = DEFAULT_REPOSITORY) -> Path:
    """A copy of a model repository's configs and model.py files, without build outputs."""
    import shutil

    return Path(shutil.copytree(source, target, ignore=shutil.ignore_patterns(*BUILD_OUTPUTS)))


def parse_config(path: str | Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(Path(path).read_text(), model_config_pb2.ModelConfig())


def parameter(config: model_config_pb2.ModelConfig, key: str) -> str:
    if key not in config.parameters:
        raise KeyError(f"model '{config.name}' has no parameter '{key}'")
    return config.parameters[key].string_value


def set_parameter(path: str | Path, key: str, value: str) -> None:
    """Rewrites one `parameters` value in place, keeping the file's layout and comments."""
    path = Path(path)
    text = path.read_text()
    pattern = re.compile(r'(key:\s*"' + re.escape(key) + r'"\s*value\s*\{\s*string_value:\s*)"(?:[^"\\]|\\.)*"')
    quoted = json.dumps(value)  # a protobuf text string literal accepts JSON's escapes
    new_text, count = pattern.subn(lambda m: m.group(1) + quoted, text)
    if count != 1:
        raise ValueError(f"{path}: expected one parameter '{key}', found {count}")
    if parameter(text_format.Parse(new_text, model_config_pb2.ModelConfig()), key) != value:
        raise ValueError(f"{path}: rewriting parameter '{key}' did not round-trip")
    path.write_text(new_text)


@dataclass(frozen=True)
class Ensemble:
    """The ensemble and its three steps, found by reading the repository's configs."""

    repository: Path
    name: str
    tokenizer: str
    classifier: str
    postprocess: str

    @classmethod
    def read(cls, repository: str | Path = DEFAULT_REPOSITORY, name: str = DEFAULT_ENSEMBLE) -> Ensemble:
        repository = Path(repository)
        config = parse_config(repository / name / "config.pbtxt")
        steps = [step.model_name for step in config.ensemble_scheduling.step]
        if len(steps) != 3:
            raise ValueError(f"ensemble '{name}' should have 3 steps (tokenizer, classifier, postprocess): {steps}")
        return cls(repository, name, *steps)

    @property
    def steps(self) -> list[str]:
        return [self.tokenizer, self.classifier, self.postprocess]

    def config_path(self, model: str, variant: str | None = None) -> Path:
        directory = self.repository / model
        return directory / "configs" / f"{variant}.pbtxt" if variant else directory / "config.pbtxt"

    def config(self, model: str, variant: str | None = None) -> model_config_pb2.ModelConfig:
        return parse_config(self.config_path(model, variant))

    def version_dir(self, model: str) -> Path:
        return self.repository / model / "1"

    @property
    def tokenizer_file(self) -> Path:
        return self.version_dir(self.tokenizer) / "tokenizer.json"

    @property
    def model_file(self) -> Path:
        return self.version_dir(self.classifier) / "model.pt"

    @property
    def onnx_file(self) -> Path:
        return self.version_dir(self.classifier) / "model.onnx"

    def served_file(self, variant: str) -> Path:
        """The classifier file a variant of CLASSIFIER_CONFIGS serves."""
        return self.onnx_file if variant.startswith("onnx") else self.model_file

    @property
    def report_file(self) -> Path:
        return self.version_dir(self.classifier) / "build_report.json"

    @property
    def labels(self) -> list[str]:
        return json.loads(parameter(self.config(self.postprocess), "labels"))

    @property
    def max_length(self) -> int:
        return int(parameter(self.config(self.tokenizer), "max_length"))

    @property
    def max_batch_size(self) -> int:
        return self.config(self.name).max_batch_size

    @property
    def text_input(self) -> str:
        return self.config(self.name).input[0].name

    @property
    def outputs(self) -> tuple[str, str]:
        """(label, scores): the ensemble's two outputs, in its config's order."""
        label, scores = (output.name for output in self.config(self.name).output)
        return label, scores

    def is_built(self) -> bool:
        return self.model_file.is_file() and self.tokenizer_file.is_file()
