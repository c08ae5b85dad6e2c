"""The client's errors are typed (no server)."""

import pytest

from emotion_triton.client import ClientError, EmotionClient, ServerUnreachableError


def test_client_errors_are_typed():
    with EmotionClient("127.0.0.1:1", timeout=2) as client, pytest.raises(ServerUnreachableError) as raised:
        client.classify(["hello"])
    assert isinstance(raised.value, ClientError) and raised.value.kind == "unavailable"  # the name reports use
