"""The `emotion-classify` command (client/classify.py): classify texts with the served `emotion` ensemble.

emotion-classify --text "i feel wonderful today" --text "this is terrifying"
emotion-classify --file texts.txt --json
echo "i am so angry" | emotion-classify --protocol http --url 127.0.0.1:8000
"""

import argparse
import json
import sys

from .emotion_client import ClientError, EmotionClient


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text", action="append", default=[], help="a text to classify (repeatable)")
    parser.add_argument("--file", help="a file with one text per line")
    parser.add_argument("--url", help="server address (default 127.0.0.1:8001 for gRPC, 127.0.0.1:8000 for HTTP)")
    parser.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    parser.add_argument("--model", default="emotion")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    parser.add_argument("--json", action="store_true", help="print the Hugging Face pipeline's JSON format")
    args = parser.parse_args(argv)

    texts = list(args.text)
    if args.file:
        with open(args.file, encoding="utf-8") as handle:
            texts += [line.rstrip("\n") for line in handle if line.strip()]
    if not texts and not sys.stdin.isatty():
        texts += [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        parser.error("no text: use --text, --file or standard input")

    try:
        with EmotionClient(args.url, args.protocol, args.model, args.timeout) as client:
            predictions = client.classify(texts)
    except ClientError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

    if args.json:
        print(json.dumps([p.as_pipeline() for p in predictions]))
    else:
        for p in predictions:
            print(p.text if len(p.text) <= 100 else p.text[:97] + "...")
            if p.error:
                print(f"  error: {p.error}")
                continue
            for label, score in sorted(p.scores.items(), key=lambda item: -item[1]):
                print(f"  {label:<12} {score:7.2%}  {'#' * round(score * 30)}")
    return 1 if any(p.error for p in predictions) else 0
