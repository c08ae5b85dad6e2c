"""The `emotion-classify` command (client/classify.py): classify texts with the served `emotion` ensemble.

    emotion-classify --text "i feel wonderful today" --text "this is terrifying"
    emotion-classify --file texts.txt --json
    echo "i am so angry" | emotion-classify --protocol http --url 127.0.0.1:8000

Exit codes: 0 every text classified; 1 the server cannot be used or a text failed; 2 bad options or no text.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Annotated, Literal

from tyro.conf import UseAppendAction, arg

from ..command_line import parse, usage_error
from .emotion_client import DEFAULT_URLS, ClientError, EmotionClient

# The --url option of every client command; its help shows the defaults EmotionClient applies.
ServerUrl = Annotated[
    str | None,
    arg(help_behavior_hint=f"(default: {DEFAULT_URLS['grpc']} for gRPC, {DEFAULT_URLS['http']} for HTTP)"),
]


@dataclass
class ClassifyOptions:
    """The texts, the server, and the output."""

    texts: Annotated[list[str], UseAppendAction, arg(name="text", help_behavior_hint="(repeatable)")] = field(
        default_factory=list
    )
    """a text to classify"""
    file: str | None = None
    """a file with one text per line"""
    url: ServerUrl = None
    """server address"""
    protocol: Literal["grpc", "http"] = "grpc"
    model: str = "emotion"
    timeout: float = 30.0
    """seconds per request"""
    json: bool = False
    """print the Hugging Face pipeline's JSON format"""


def main(argv=None) -> int:
    options = parse(ClassifyOptions, argv, __doc__)

    texts = list(options.texts)
    if options.file:
        with open(options.file, encoding="utf-8") as handle:
            texts += [line.rstrip("\n") for line in handle if line.strip()]
    if not texts and not sys.stdin.isatty():
        texts += [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        return usage_error("no text: use --text, --file or standard input")

    try:
        with EmotionClient(options.url, options.protocol, options.model, options.timeout) as client:
            predictions = client.classify(texts)
    except ClientError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

    if options.json:
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
