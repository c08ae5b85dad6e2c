"""The `emotion-evaluate` command (also client/evaluate.py): accuracy of the served `emotion` ensemble on labelled data.

    emotion-evaluate ../shared/data/emotion                          # the directory's validation split
    emotion-evaluate test.txt --protocol http --url 127.0.0.1:8000 --json
    emotion-evaluate ../shared/data/emotion --compare-with        # and the offline build's checkpoint, eagerly
    emotion-evaluate dair-ai/emotion:test --compare-with runs/x/checkpoint --report-dir results/

Exit codes: 0 every text answered (and parity held, with --compare-with); 1 some texts failed or the
server cannot be used; 2 bad options or input; 3 the served model disagrees with the eager checkpoint.
Needs the `evaluate` extra; --compare-with also needs torch and transformers (the `build` extra): the
command composes the evaluation layer with the build's eager reference, imported only then.
"""

import argparse
from pathlib import Path

from ..evaluation.server_accuracy import EvaluationOptions, run
from ..repository import DEFAULT_CHECKPOINT, OFFLINE_BUILD_COMMAND, PROJECT_ROOT


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "source",
        help="labelled data: a file (text;label lines, CSV or JSON Lines), a directory of splits, "
        "or a Hub data set with an optional split (dair-ai/emotion:test)",
    )
    parser.add_argument(
        "--split", default="validation", help="split of a directory or Hub data set (default: %(default)s)"
    )
    parser.add_argument("--url", help="server address (default 127.0.0.1:8001 for gRPC, 127.0.0.1:8000 for HTTP)")
    parser.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    parser.add_argument("--model", default="emotion")
    parser.add_argument("--batch-size", type=int, help="texts per request (default: the server's max_batch_size)")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default: %(default)s)")
    parser.add_argument(
        "--compare-with",
        metavar="CHECKPOINT",
        nargs="?",
        const=str(DEFAULT_CHECKPOINT),
        help="a fine-tuned checkpoint directory: also run it eagerly on the same texts and check parity "
        f"(without a value: {DEFAULT_CHECKPOINT.relative_to(PROJECT_ROOT)}, where `{OFFLINE_BUILD_COMMAND}` puts it)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the text report")
    parser.add_argument("--report-dir", type=Path, help="write evaluation.json and confusion_matrix.png here")
    args = parser.parse_args(argv)
    load_reference = None
    if args.compare_with:
        from ..build.eager_reference import CheckpointReference  # torch and transformers: only for --compare-with

        load_reference = CheckpointReference
    return run(
        EvaluationOptions(
            source=args.source,
            split=args.split,
            url=args.url,
            protocol=args.protocol,
            model=args.model,
            batch_size=args.batch_size,
            concurrency=args.concurrency,
            timeout=args.timeout,
            compare_with=args.compare_with,
            as_json=args.json,
            report_dir=args.report_dir,
        ),
        load_reference,
    )
