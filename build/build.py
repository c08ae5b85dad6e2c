"""Fine-tune a transformer text classifier and install it into the Triton model repository.

python build/build.py                                  # the model card's recipe (needs the Hub)
python build/build.py --preset minilm-offline          # offline, on this project's machines
python build/build.py --base_model DIR --data DIR --num_train_epochs 3
python build/build.py --finetuned bhadresh-savani/distilbert-base-uncased-emotion

Options: those of BuildOptions (what to build) and every `transformers.TrainingArguments` option
(how to train); a preset fills in both, explicit options override it.

The build installs a new version beside the ones in the repository. When `make serve` serves that
repository, the build ends with the version's roll-out: checked through the server, then served, or
refused with the old version still serving (docs/deploy.md, "Versions, roll-out and rollback").
"""

import sys

from emotion_triton.commands.build import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], __doc__))
