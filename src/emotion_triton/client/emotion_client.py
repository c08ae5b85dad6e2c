"""A small client for the `emotion` ensemble over gRPC or HTTP (tritonclient).

    with EmotionClient("127.0.0.1:8001") as client:
        for p in client.classify(["i feel great", "this is scary"]):
            print(p.label, p.scores)

Labels, input and output names and the largest batch are read from the
server's model configuration, never repeated here. Texts go in batched
requests of up to `max_batch_size`. Overload answers (UNAVAILABLE / 503) are
retried with exponential backoff and jitter; `timeout` is the deadline of a
whole request, retries included, and the server is told it so that it drops
requests nobody waits for. A text the server refuses fails alone, not its
neighbours. `on_request` sees every request as it ends (texts, seconds,
attempts, error): the hook for latency statistics and load tests.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from tritonclient.utils import InferenceServerException

from ..errors import EmotionTritonError
from ..triton_http import CALL_ERRORS
from ..triton_http import client as http_client

DEFAULT_URLS = {"grpc": "127.0.0.1:8001", "http": "127.0.0.1:8000"}


class ClientError(EmotionTritonError, RuntimeError):
    """A one-line reason a request could not be answered; the subclasses say why.

    `kind` is the name reports count failures by (evaluation, load tests).
    """

    kind = "error"
    server_message = ""  # the server's whole error text; the message keeps its first line


class ServerUnreachableError(ClientError):
    """No Triton server answers at the address."""

    kind = "unavailable"


class ServerOverloadedError(ClientError):
    """The server refused the request for now (queue full or queue timeout): retried with backoff."""

    kind = "overloaded"


class RequestTimeoutError(ClientError):
    """No answer within the client's deadline."""

    kind = "timeout"


class ModelNotServedError(ClientError):
    """The server runs, but not the model asked for (or not one this client can use)."""

    kind = "not_found"


class InvalidRequestError(ClientError):
    """The server refused the input itself (empty, not UTF-8, too long): retrying cannot help."""

    kind = "invalid"


@dataclass
class Prediction:
    text: str
    label: str | None
    scores: dict[str, float] | None  # every class in label order
    error: str | None = None

    def as_pipeline(self) -> list[dict]:
        """The Hugging Face pipeline's format (top_k=None), in label order."""
        return [{"label": label, "score": score} for label, score in (self.scores or {}).items()]


@dataclass
class RequestRecord:
    """One inference request as the client saw it (given to `EmotionClient.on_request`)."""

    texts: int  # texts in the request
    seconds: float  # from sending the first attempt to the answer or the final error, retry backoff included
    attempts: int  # 1 + retries after overload answers
    error: ClientError | None = None


def client_error(error: Exception, url: str, model: str) -> ClientError:
    """The typed ClientError for what tritonclient raised (CALL_ERRORS: an InferenceServerException, an
    OSError, or http.client's HTTPException for a connection the HTTP server broke off)."""
    status = str(error.status() if isinstance(error, InferenceServerException) else "") or ""
    whole = (error.message() if isinstance(error, InferenceServerException) else str(error)) or type(error).__name__
    typed = _typed_error(status, whole.strip().splitlines()[0], error, url, model)
    typed.server_message = whole
    return typed


def _typed_error(status: str, text: str, error: Exception, url: str, model: str) -> ClientError:
    # Triton's status code alone cannot tell a full queue from a dead connection, nor an unknown
    # model from a bad input: its error text is read here, and only here.
    lowered = text.lower()
    if "exceeds maximum queue size" in lowered or "request timeout expired" in lowered:  # 503: queue full or timed out
        return ServerOverloadedError(f"the server is overloaded: {text}")
    if "DEADLINE_EXCEEDED" in status or "timed out" in lowered or "timeout" in lowered or "deadline" in lowered:
        return RequestTimeoutError(f"no answer from {url} in time: {text}")
    if "UNAVAILABLE" in status and ("connect" in lowered or "failed to" in lowered or "dns" in lowered):
        return ServerUnreachableError(f"cannot reach a Triton server at {url}: {text}")
    if "UNAVAILABLE" in status or status == "503":
        return ServerOverloadedError(f"the server is overloaded: {text}")
    if "unknown model" in lowered or "not found" in lowered or status in ("NOT_FOUND", "StatusCode.NOT_FOUND"):
        return ModelNotServedError(f"model '{model}' is not served at {url}: {text}")
    if "INVALID_ARGUMENT" in status or status == "400":
        return InvalidRequestError(text)
    if isinstance(error, OSError | http.client.HTTPException):
        return ServerUnreachableError(f"cannot reach a Triton server at {url}: {text}")
    return ClientError(text)


class EmotionClient:
    def __init__(
        self,
        url: str | None = None,
        protocol: str = "grpc",
        model: str = "emotion",
        timeout: float = 30.0,
        retries: int = 4,
        concurrency: int = 1,
        on_request: Callable[[RequestRecord], None] | None = None,
    ):
        if protocol not in ("grpc", "http"):
            raise ValueError(f"protocol must be grpc or http, not {protocol!r}")
        self.protocol = protocol
        self.url = url or DEFAULT_URLS[protocol]
        self.model = model
        self.timeout = timeout
        self.retries = retries
        self.concurrency = max(1, concurrency)
        self.on_request = on_request  # called in the thread that sent the request
        self._local = threading.local()  # tritonclient's HTTP client is not thread-safe: one per thread
        self._clients = []
        self._config = None
        self._labels = None

    # -- connection -------------------------------------------------------------------------
    @property
    def _module(self):
        if self.protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
        return module

    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            if self.protocol == "grpc":
                client = self._module.InferenceServerClient(self.url)
            else:
                client = http_client(self.url, self.timeout)
            self._local.client = client
            self._clients.append(client)
        return client

    def _call(self, method: str, *args, **kwargs):
        try:
            return getattr(self._client(), method)(*args, **kwargs)
        except CALL_ERRORS as error:
            raise client_error(error, self.url, self.model) from None

    def model_config(self, name: str) -> dict:
        if self.protocol == "grpc":
            return self._call("get_model_config", name, as_json=True, client_timeout=self.timeout)["config"]
        return self._call("get_model_config", name)

    @property
    def config(self) -> dict:
        if self._config is None:
            self._config = self.model_config(self.model)
        return self._config

    @property
    def max_batch_size(self) -> int:
        return int(self.config.get("max_batch_size") or 1)

    @property
    def labels(self) -> list[str]:
        """Class names, from the `labels` parameter of the step that produces the scores."""
        if self._labels is None:
            scores = self.config["output"][1]["name"] if len(self.config["output"]) > 1 else None
            step = self._step(lambda step: scores in step.get("output_map", {}).values())
            params = self.model_config(step["model_name"]).get("parameters", {}) if step else {}
            if "labels" not in params:
                raise ModelNotServedError(f"model '{self.model}' has no step that names its labels")
            self._labels = json.loads(params["labels"]["string_value"])
        return self._labels

    @property
    def max_length(self) -> int | None:
        """The tokenizer's truncation length: the `max_length` parameter of the step that reads the text
        (None when the served model names none)."""
        text_input = self.config["input"][0]["name"]
        step = self._step(lambda step: text_input in step.get("input_map", {}).values())
        params = self.model_config(step["model_name"]).get("parameters", {}) if step else {}
        return int(params["max_length"]["string_value"]) if "max_length" in params else None

    def _step(self, matches) -> dict | None:
        """The first step of the served ensemble that `matches`."""
        return next((s for s in self.config.get("ensemble_scheduling", {}).get("step", []) if matches(s)), None)

    # -- inference --------------------------------------------------------------------------
    def infer(self, texts: list[str]) -> tuple[list[str], np.ndarray]:
        """One request: the winning label and all class probabilities of each text."""
        module = self._module
        input_name = self.config["input"][0]["name"]
        label_name, scores_name = (output["name"] for output in self.config["output"][:2])
        array = np.array([[t.encode("utf-8") if isinstance(t, str) else t] for t in texts], dtype=np.object_)
        tensor = module.InferInput(input_name, list(array.shape), "BYTES")
        tensor.set_data_from_numpy(array)
        outputs = [module.InferRequestedOutput(label_name), module.InferRequestedOutput(scores_name)]
        delay = 0.05
        start = time.perf_counter()
        deadline = start + self.timeout  # the whole call, overload retries included
        for attempt in range(self.retries + 1):
            remaining = max(deadline - time.perf_counter(), 1e-3)
            # `timeout` (microseconds) lets the server drop the request from its queues once this
            # client has given up on it; it can only shorten the models' default queue timeout.
            kwargs = {"timeout": int(remaining * 1e6)}
            if self.protocol == "grpc":
                kwargs["client_timeout"] = remaining
            try:
                result = self._call("infer", self.model, [tensor], outputs=outputs, **kwargs)
                break
            except ClientError as error:
                if (
                    isinstance(error, ServerOverloadedError) and time.perf_counter() >= deadline
                ):  # refused for our own deadline
                    error = RequestTimeoutError(f"no answer from {self.url} within {self.timeout:g} s: {error}")
                pause = delay * (0.5 + random.random())  # jitter: clients refused together come back apart
                if (
                    not isinstance(error, ServerOverloadedError)
                    or attempt == self.retries
                    or time.perf_counter() + pause >= deadline
                ):
                    self._record(len(texts), start, attempt + 1, error)
                    raise error from None
                time.sleep(pause)
                delay *= 2
        self._record(len(texts), start, attempt + 1)
        labels = [value.decode("utf-8") for value in result.as_numpy(label_name).reshape(-1)]
        return labels, result.as_numpy(scores_name)

    def classify(self, texts: list[str]) -> list[Prediction]:
        """Classifies any number of texts in batched requests (`concurrency` at a time)."""
        texts = list(texts)
        size = self.max_batch_size
        chunks = [texts[i : i + size] for i in range(0, len(texts), size)]
        if self.concurrency > 1 and len(chunks) > 1:
            with ThreadPoolExecutor(self.concurrency) as pool:
                parts = list(pool.map(self.classify_batch, chunks))
        else:
            parts = [self.classify_batch(chunk) for chunk in chunks]
        return [prediction for part in parts for prediction in part]

    def classify_batch(self, texts: list[str]) -> list[Prediction]:
        """One request of at most `max_batch_size` texts; a refused text fails alone, other errors raise."""
        try:
            labels, scores = self.infer(texts)
        except ClientError as error:
            if not isinstance(error, InvalidRequestError):
                raise
            if len(texts) == 1:
                return [Prediction(texts[0], None, None, str(error))]
            # The server refuses a whole request for one bad text: find it, keep the others.
            return [p for text in texts for p in self.classify_batch([text])]
        names = self.labels
        return [
            Prediction(text, label, dict(zip(names, map(float, row), strict=True)))
            for text, label, row in zip(texts, labels, scores, strict=True)
        ]

    def _record(self, texts: int, start: float, attempts: int, error: ClientError | None = None) -> None:
        if self.on_request is not None:
            self.on_request(RequestRecord(texts, time.perf_counter() - start, attempts, error))

    def close(self) -> None:
        for client in self._clients:
            try:
                client.close()
            except Exception:  # closing a broken connection must not hide the real error
                pass
        self._clients.clear()

    def __enter__(self) -> EmotionClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
