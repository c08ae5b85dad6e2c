"""The `emotion-serve` command (`make serve`): the supervised local tritonserver, with a model built first
when the repository has none.

    python -m emotion_triton.commands.serve [--classifier onnx|libtorch] [--http-port 8000] ...

It composes two layers that never import each other: the build (on the first start, the model card's
published checkpoint exported from the Hub, or offline the offline preset fine-tuned on local files)
and the serving layer (preflight, tritonserver, the canary supervision: emotion_triton.serving). Its
options are the serving layer's.
"""

from __future__ import annotations

import logging
import sys

from ..errors import EmotionTritonError
from ..hub import hub_reachable
from ..repository import OFFLINE_PRESET, Ensemble
from ..serving import supervisor
from ..serving.preflight import ServerError, relative_path

PUBLISHED_CHECKPOINT = "bhadresh-savani/distilbert-base-uncased-emotion"
# The offline preset's build, measured on 2 cores (README, "The first hour"): the fine-tune dominates.
OFFLINE_BUILD_MINUTES = 26
logger = logging.getLogger(__name__)


def ensure_built(ensemble: Ensemble) -> None:
    """With no model yet, exports the model card's published checkpoint; offline, fine-tunes the offline preset."""
    if ensemble.model_file.exists() or ensemble.tokenizer_file.exists():
        return
    # torch and transformers: only when a model is missing
    from ..build.command import parse_build_arguments
    from ..build.pipeline import BuildOptions, build

    where = relative_path(ensemble.repository)
    try:
        if hub_reachable():
            logger.info("no model in %s yet: exporting %s from the Hub", where, PUBLISHED_CHECKPOINT)
            build(BuildOptions(finetuned=PUBLISHED_CHECKPOINT, data=None, repository=ensemble.repository))
            return
        logger.info(
            "no model in %s yet and the Hugging Face Hub is unreachable: fine-tuning the offline preset %s on "
            "local files (about %d minutes on 2 cores, less on more; progress below), then serving it",
            where,
            OFFLINE_PRESET,
            OFFLINE_BUILD_MINUTES,
        )
        build(*parse_build_arguments(["--preset", OFFLINE_PRESET, "--repository", str(ensemble.repository)]))
    except (EmotionTritonError, FileNotFoundError, ValueError) as error:
        raise ServerError(f"no model in {where} yet, and building one failed: {error}") from error


def main(argv: list[str] | None = None) -> int:
    return supervisor.main(argv, prepare=ensure_built)


if __name__ == "__main__":
    sys.exit(main())
