"""Evaluate the served `emotion` ensemble on labelled data (the command: emotion_triton.commands.evaluate).

python client/evaluate.py ../shared/data/emotion                          # the directory's validation split
python client/evaluate.py test.txt --protocol http --url 127.0.0.1:8000 --json
python client/evaluate.py dair-ai/emotion:test --compare-with runs/x/checkpoint --report-dir results/

Exit codes: 0 every text answered (and parity held, with --compare-with); 1 some texts failed or the
server cannot be used; 2 bad options or input; 3 the served model disagrees with the eager checkpoint.
"""

import sys

from emotion_triton.commands.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
