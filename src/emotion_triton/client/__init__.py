"""The client layer: classify texts with the served ensemble.

Needs numpy, tritonclient and tyro (the command line) only, the package without extras (`pip install .`): no torch, no transformers.
"""

from .emotion_client import (
    DEFAULT_URLS,
    ClientError,
    EmotionClient,
    InvalidRequestError,
    ModelNotServedError,
    Prediction,
    RequestRecord,
    RequestTimeoutError,
    ServerOverloadedError,
    ServerUnreachableError,
    client_error,
)

__all__ = [
    "DEFAULT_URLS",
    "ClientError",
    "EmotionClient",
    "InvalidRequestError",
    "ModelNotServedError",
    "Prediction",
    "RequestRecord",
    "RequestTimeoutError",
    "ServerOverloadedError",
    "ServerUnreachableError",
    "client_error",
]
