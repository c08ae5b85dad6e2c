"""`build/build.py`'s command line: BuildOptions and transformers.TrainingArguments, declared once each."""

from __future__ import annotations

import argparse
import sys

from ..errors import EmotionTritonError
from ..repository import RUNS_DIR
from .pipeline import BuildOptions, build
from .training import PRESETS, TRAINING_DEFAULTS


def parse_build_arguments(argv: list[str], description: str | None = None):
    """(BuildOptions, TrainingArguments) of a command line; `--preset NAME` sets the defaults of both."""
    from transformers import HfArgumentParser, TrainingArguments

    preset_parser = argparse.ArgumentParser(add_help=False)
    preset_parser.add_argument(
        "--preset", choices=sorted(PRESETS), default="model-card", help="named recipe (default: %(default)s)"
    )
    preset, rest = preset_parser.parse_known_args(argv)
    parser = HfArgumentParser(
        (BuildOptions, TrainingArguments),
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[preset_parser],
    )
    # A named run keeps its folder where `make bench` and `--compare-with` look: runs/<preset>/checkpoint.
    parser.set_defaults(**TRAINING_DEFAULTS, output_dir=str(RUNS_DIR / preset.preset))
    parser.set_defaults(**PRESETS[preset.preset])
    options, training = parser.parse_args_into_dataclasses(argv)[:2]  # then a namespace holding --preset
    if options.finetuned and "--data" not in rest:
        options.data = None  # exporting a checkpoint: measure it only on data named explicitly
    return options, training


def run_build(options: BuildOptions, training) -> dict | None:
    """The build's report, or None after one line on stderr saying why it failed."""
    try:
        return build(options, training)
    except (EmotionTritonError, FileNotFoundError, ValueError) as error:  # ours, and the libraries' bad input
        print(f"build failed: {error}", file=sys.stderr)
        return None


def build_from_command_line(argv: list[str], description: str | None = None) -> int:
    return 0 if run_build(*parse_build_arguments(argv, description)) is not None else 2
