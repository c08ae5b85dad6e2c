"""Fine-tune a transformer text classifier and install it into the Triton model repository.

python build/build.py                                  # the model card's recipe (needs the Hub)
python build/build.py --preset minilm-offline          # offline, on this project's machines
python build/build.py --base-model DIR --data DIR --epochs 3
python build/build.py --finetuned bhadresh-savani/distilbert-base-uncased-emotion
"""

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from emotion_triton.build.pipeline import BuildOptions, build
from emotion_triton.build.torchscript_export import ExportCheckError
from emotion_triton.build.training import PRESETS, TrainingArguments
from emotion_triton.hub import ModelSourceError
from emotion_triton.repository import PROJECT_ROOT


def parse_args(argv=None) -> BuildOptions:
    defaults = TrainingArguments()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="model-card",
        help="named recipe; the options below override its values (default: %(default)s)",
    )
    parser.add_argument("--base-model", help="Hub id or local directory of the pretrained encoder")
    parser.add_argument("--data", help="Hub data set id or a local directory/file of labelled text")
    parser.add_argument("--finetuned", help="export this fine-tuned checkpoint (Hub id or directory) without training")
    parser.add_argument("--labels", help="comma-separated class names in output order (default: from the data)")
    parser.add_argument("--repository", type=Path, help="model repository to install into (default: model_repository/)")
    parser.add_argument("--output-dir", type=Path, help="where the fine-tuned checkpoint and resumable state go")
    parser.add_argument(
        "--quantize",
        choices=("none", "int8"),
        default="none",
        help="int8: dynamic int8 quantization for CPU serving, refused if it loses > 0.5 points",
    )
    for field in dataclasses.fields(TrainingArguments):
        flag = "--" + field.name.replace("_", "-")
        parser.add_argument(
            flag,
            type=type(getattr(defaults, field.name)),
            help=f"(model card default: {getattr(defaults, field.name)})",
        )
    args = parser.parse_args(argv)

    preset = dict(PRESETS[args.preset])
    chosen = {k: v for k, v in vars(args).items() if v is not None}
    settings = {**preset, **chosen}
    training = TrainingArguments(
        **{f.name: settings[f.name] for f in dataclasses.fields(TrainingArguments) if f.name in settings}
    )
    options = BuildOptions(
        base_model=settings["base_model"],
        data=settings.get("data") if not (args.finetuned and args.data is None) else None,
        finetuned=args.finetuned,
        labels=args.labels.split(",") if args.labels else None,
        # A named offline preset keeps its run where `make bench` looks for it (runs/<preset>/checkpoint).
        output_dir=args.output_dir or (PROJECT_ROOT / "runs" / args.preset if args.preset != "model-card" else None),
        quantize=args.quantize,
        training=training,
    )
    if args.repository:
        options.repository = args.repository
    return options


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    options = parse_args(argv)
    try:
        build(options)
    except (ModelSourceError, ExportCheckError, FileNotFoundError, ValueError) as error:
        print(f"build failed: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
