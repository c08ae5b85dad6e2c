"""Classify texts with the served `emotion` ensemble.

python client/classify.py --text "i feel wonderful today" --text "this is terrifying"
python client/classify.py --file texts.txt --json
echo "i am so angry" | python client/classify.py --protocol http --url 127.0.0.1:8000
"""

import sys

from emotion_triton.client.classify import main

if __name__ == "__main__":
    sys.exit(main())
