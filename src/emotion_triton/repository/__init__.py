"""The base layer: the Triton model repository, whose config.pbtxt files are the one source of truth.

Importable by every other layer; it imports none of them.
"""

from .model_config import (
    BUILD_OUTPUTS,
    CLASSIFIER_CONFIGS,
    DEFAULT_CHECKPOINT,
    DEFAULT_ENSEMBLE,
    DEFAULT_REPOSITORY,
    KEPT_VERSIONS,
    OFFLINE_BUILD_COMMAND,
    OFFLINE_PRESET,
    PROJECT_ROOT,
    RUNS_DIR,
    SOURCE_VERSION,
    Ensemble,
    copy_sources,
    parameter,
    parse_config,
    set_parameter,
)
from .variants import CPU_VARIANTS, DEFAULT_CLASSIFIER, STATE_FILE, VARIANTS

__all__ = [
    "CPU_VARIANTS",
    "DEFAULT_CLASSIFIER",
    "STATE_FILE",
    "VARIANTS",
    "BUILD_OUTPUTS",
    "CLASSIFIER_CONFIGS",
    "DEFAULT_CHECKPOINT",
    "DEFAULT_ENSEMBLE",
    "DEFAULT_REPOSITORY",
    "KEPT_VERSIONS",
    "OFFLINE_BUILD_COMMAND",
    "OFFLINE_PRESET",
    "PROJECT_ROOT",
    "RUNS_DIR",
    "SOURCE_VERSION",
    "Ensemble",
    "copy_sources",
    "parameter",
    "parse_config",
    "set_parameter",
]
