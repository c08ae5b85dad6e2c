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

from ..command_line import parse
from ..evaluation.server_accuracy import EvaluationOptions, run


def main(argv=None) -> int:
    options = parse(EvaluationOptions, argv, __doc__)
    load_reference = None
    if options.compare_with:
        from ..build.eager_reference import CheckpointReference  # torch and transformers: only for --compare-with

        load_reference = CheckpointReference
    return run(options, load_reference)
