"""What the soak (perf/soak.py) sends and how it judges the answers: a stream of good and bad requests,
a blocking sender per closed-loop client, and the outcome of each answer (typed client errors)."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from tritonclient.utils import InferenceServerException

from emotion_triton.client import (
    ClientError,
    InvalidRequestError,
    ModelNotServedError,
    RequestTimeoutError,
    ServerOverloadedError,
    ServerUnreachableError,
    client_error,
)
from emotion_triton.serving.local_server import LocalServer

PROBE_TEXTS = [
    "i feel wonderful today",
    "this is terrifying and i cannot sleep",
    "i am so angry at how they treated us",
    "i miss her every single day",
    "what a surprise to see you here",
    "i love the way you laugh",
    "je me sens très heureux aujourd'hui 😊",
    "今日はとても悲しい",
]
TEXTS = PROBE_TEXTS + [
    "i feel a little nervous about tomorrow",
    "the concert was amazing and i am still smiling",
    "i feel like nobody listens to me anymore",
    "honestly i did not expect to win",
    "i am furious that the train was cancelled again",
    " ".join(["i keep thinking about the long road home and everything we left behind"] * 20),  # truncated
    "ok",
    "مرحبا، أنا سعيد جدا",
]
LEAKS = re.compile(r"Traceback|triton_python_backend_shm_region|/tmp/|/home/|site-packages|\.py\b")


@dataclass
class SoakRequest:
    """One request of the load: a good one (known texts) or a bad one, `what` saying what is wrong."""

    kind: str  # good | bad
    what: str
    texts: list[bytes]
    datatype: str
    model: str

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class Answer:
    """How the server answered one request, and what was wrong with that, if anything."""

    kind: str  # the request's: good | bad
    outcome: str  # ok | invalid | not_found | overloaded | unanswered | leak | error
    problem: str | None = None


def soak_requests(bad_share: float, model: str, seed: int) -> Iterator[SoakRequest]:
    """An endless stream of requests of 1 to 16 known texts, `bad_share` of them bad."""
    pick = random.Random(seed)
    while True:
        texts = [pick.choice(TEXTS).encode() for _ in range(pick.randint(1, 16))]
        if pick.random() >= bad_share:
            yield SoakRequest("good", "texts", texts, "BYTES", model)
            continue
        what = pick.choice(["empty", "whitespace", "nul", "utf8", "long", "batch", "dtype", "model"])
        at = pick.randrange(len(texts))
        if what in ("empty", "whitespace", "nul", "utf8", "long"):
            texts[at] = {
                "empty": b"",
                "whitespace": b" \t\n ",
                "nul": b"hello\x00world",
                "utf8": b"caf\xc3 \xff",
                "long": b"word " * 20_000,  # 100 kB: over the 64 KiB limit
            }[what]
        elif what == "batch":
            texts = texts[:1] * 65
        datatype = "FP32" if what == "dtype" else "BYTES"
        yield SoakRequest("bad", what, texts, datatype, "no_such_model" if what == "model" else model)


class SoakSender:
    """One closed-loop client's blocking sender (gRPC for even workers, HTTP for odd). Its tritonclient
    client is made on the first request, in the thread the load generator keeps for this worker."""

    def __init__(self, index: int, server: LocalServer, timeout: float):
        self.protocol = "grpc" if index % 2 == 0 else "http"
        self.url = server.grpc_url if self.protocol == "grpc" else server.http_url
        self.text_input, (self.label_output, self.scores_output) = server.ensemble.text_input, server.ensemble.outputs
        self.timeout = timeout
        self.module = self.client = None

    def _connect(self) -> None:
        if self.protocol == "grpc":
            import tritonclient.grpc as module

            self.client = module.InferenceServerClient(self.url)
        else:
            import tritonclient.http as module

            self.client = module.InferenceServerClient(
                self.url, connection_timeout=self.timeout, network_timeout=self.timeout
            )
        self.module = module

    def __call__(self, request: SoakRequest) -> Answer:
        if self.client is None:
            self._connect()
        if request.datatype == "BYTES":
            array = np.array([[t] for t in request.texts], dtype=np.object_)
        else:
            array = np.zeros((len(request.texts), 1), dtype=np.float32)
        tensor = self.module.InferInput(self.text_input, list(array.shape), request.datatype)
        tensor.set_data_from_numpy(array)
        kwargs = {"client_timeout": self.timeout} if self.protocol == "grpc" else {}
        try:
            try:
                result = self.client.infer(request.model, [tensor], **kwargs)
            except (InferenceServerException, OSError) as error:
                raise client_error(error, self.url, request.model) from None
        except ClientError as error:
            return Answer(request.kind, *_refusal(request, error))
        except Exception as error:  # a dropped connection or a client-side timeout: a request left unanswered
            problem = f"{self.protocol} {request.what}: no answer ({type(error).__name__}: {error})"
            return Answer(request.kind, "unanswered", problem)
        return Answer(request.kind, "ok", self._problem(request, result))

    def _problem(self, request: SoakRequest, result) -> str | None:
        """What is wrong with an answer: a bad request answered, or labels and scores that do not fit."""
        texts = len(request.texts)
        labels, scores = result.as_numpy(self.label_output), result.as_numpy(self.scores_output)
        if request.kind == "bad":
            return f"{self.protocol} {request.what}: a bad request was answered instead of refused"
        if labels is None or scores is None or labels.shape != (texts, 1) or len(scores) != texts:
            return f"{self.protocol}: {texts} texts answered with LABEL {getattr(labels, 'shape', None)}"
        if np.abs(scores.sum(axis=1) - 1).max() > 1e-4:
            return f"{self.protocol}: scores that are not probabilities"
        return None

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


def _refusal(request: SoakRequest, error: ClientError) -> tuple[str, str | None]:
    """(outcome, violation or None) for an error answer."""
    what, message = request.what, error.server_message or str(error)
    if isinstance(error, RequestTimeoutError | ServerUnreachableError):
        return "unanswered", f"{what}: no answer within the client deadline ({message[:100]})"
    if LEAKS.search(message):
        return "leak", f"{what}: the error message shows internals: {message[:200]!r}"
    if isinstance(error, ServerOverloadedError):
        return "overloaded", None
    if request.kind == "good":
        return "error", f"a good request failed: {error.kind}: {message[:200]}"
    if what == "model":
        return "not_found", None if isinstance(error, ModelNotServedError) else f"unknown model: {error.kind} {message}"
    if isinstance(error, InvalidRequestError):
        return "invalid", None
    return "error", f"{what}: refused as {error.kind} instead of 400 / INVALID_ARGUMENT: {message[:200]}"
