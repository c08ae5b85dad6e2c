"""Triton's HTTP API through triton_http (tritonclient.http): the roll-out's model control against a fake
server that restricts the model-repository API to the admin key as tritonserver does, and the probe of
the build container's server. The real server's answers: the integration tests' roll-outs."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from emotion_triton.repository import versions
from emotion_triton.serving.rollout import RolloutError, ServerControl

KEY = "the-key"
INDEX = [{"name": "emotion_classifier", "version": "3", "state": "READY"}]
INDEX.append({"name": "emotion_classifier", "version": "4", "state": "UNAVAILABLE", "reason": "bad file"})


class RestrictedTriton(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as tritonserver

    def do_GET(self):  # noqa: N802 - http.server's name
        self._answer(200 if self.path == "/v2/health/live" else 400, None)

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("admin-key") != KEY:
            self._answer(403, {"error": "This API is restricted, expecting header 'admin-key'"})
        elif self.path == "/v2/repository/index":
            self._answer(200, INDEX)
        else:
            self._answer(400, {"error": f"failed to load '{self.path.split('/')[-2]}'\nthe rest of the log"})

    def _answer(self, status, body):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server_url():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), RestrictedTriton)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_model_control_sends_the_admin_key_and_says_why_a_call_failed(server_url):
    control = ServerControl(server_url, KEY)
    assert control.version_states("emotion_classifier") == {3: "READY", 4: "UNAVAILABLE: bad file"}
    assert not control.is_ready()  # 400: strict readiness, false while a version unloads
    with pytest.raises(
        RolloutError, match=r"^/v2/repository/models/emotion/load answered 400: failed to load 'emotion'$"
    ):
        control.load("emotion")
    with pytest.raises(RolloutError, match=r"answered 403: .* \(is the admin key the server's TRITON_ADMIN_KEY\?\)$"):
        ServerControl(server_url, "not-the-key").version_states("emotion_classifier")
    with pytest.raises(RolloutError, match=r"^no answer from 127.0.0.1:1/v2/repository/index: .*refused"):
        ServerControl("127.0.0.1:1", KEY).version_states("emotion_classifier")


def test_the_build_container_finds_the_server_its_environment_names_when_it_is_live(server_url, monkeypatch):
    monkeypatch.setenv(versions.CLASSIFIER_VARIABLE, "onnx")
    monkeypatch.setenv(versions.ADMIN_KEY_VARIABLE, KEY)
    monkeypatch.setenv(versions.SERVER_VARIABLE, server_url)
    assert versions._container_server() == {"http_url": server_url, "admin_key": KEY, "classifier": "onnx"}
    monkeypatch.setenv(versions.SERVER_VARIABLE, "127.0.0.1:1")  # not up yet
    assert versions._container_server() is None
