"""Fine-tune a transformer text classifier and install it into the Triton model repository.

python build/build.py                                  # the model card's recipe (needs the Hub)
python build/build.py --preset minilm-offline          # offline, on this project's machines
python build/build.py --base_model DIR --data DIR --num_train_epochs 3
python build/build.py --finetuned bhadresh-savani/distilbert-base-uncased-emotion

Options: those of BuildOptions (what to build) and every `transformers.TrainingArguments` option
(how to train); a preset fills in both, explicit options override it.
"""

import logging
import sys

from emotion_triton.build.command import build_from_command_line

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(build_from_command_line(sys.argv[1:], __doc__))
