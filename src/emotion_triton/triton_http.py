"""Triton's HTTP API, spoken one way: tritonclient.http's InferenceServerClient, with the little it lacks.

tritonclient has every endpoint the package calls (health, the model-repository API, model configs,
inference, statistics) and takes the `admin-key` header of the restricted APIs per call. This module
adds a timeout per call (tritonclient's is per client) and one error with a one-line message for
whatever a call raises: InferenceServerException for an answer other than 200, OSError for no answer
or a timeout, http.client.HTTPException for a broken answer.

Three places speak HTTP otherwise, on purpose: the inference canary (serving/canary.py, urllib: it
runs where only the standard library is), Prometheus's text of the metrics port, which is not this API
(serving/prometheus.py), and the idle connection LocalServer.terminate holds open while Triton drains
(http.client: a connection to keep, opened in a signal handler).
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from tritonclient.utils import InferenceServerException

from .errors import EmotionTritonError

if TYPE_CHECKING:
    import tritonclient.http as httpclient

# What a call of tritonclient.http's client raises.
CALL_ERRORS = (InferenceServerException, OSError, http.client.HTTPException)


class TritonHTTPError(EmotionTritonError, RuntimeError):
    """A call of Triton's HTTP API had no answer, or an error answer; `status` is its HTTP status (None: none)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def client(url: str, timeout: float = 30.0) -> httpclient.InferenceServerClient:
    """tritonclient's client of `url` (host:port, with or without http://): `timeout` seconds to connect
    and for each answer. Not thread-safe: one per thread; close it (or use `session`)."""
    import tritonclient.http as httpclient  # gevent, 0.3 s: not for the importers that speak gRPC only

    return httpclient.InferenceServerClient(
        url.removeprefix("http://").rstrip("/"), connection_timeout=timeout, network_timeout=timeout
    )


@contextmanager
def session(url: str, timeout: float = 30.0, what: str = "") -> Iterator[httpclient.InferenceServerClient]:
    """A `client` for the calls of a `with` block, closed after it; what they raise becomes TritonHTTPError:
    "<what> answered <status>: <Triton's error>" or "no answer from <url><what>: <reason>"."""
    with client(url, timeout) as triton:
        try:
            yield triton
        except InferenceServerException as error:
            status = int(error.status()) if str(error.status()).isdigit() else None
            lines = str(error.message()).strip().splitlines()
            text = lines[0][:200] if lines else "no error text"  # Triton's first line
            if status is None:  # raised by tritonclient itself, before or after the request
                raise TritonHTTPError(f"{what or url}: {text}") from None
            raise TritonHTTPError(f"{what or url} answered {status}: {text}", status) from None
        except (OSError, http.client.HTTPException) as error:
            host = url.removeprefix("http://").rstrip("/")
            raise TritonHTTPError(f"no answer from {host}{what}: {getattr(error, 'reason', None) or error}") from None
