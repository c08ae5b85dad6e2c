"""A fake Triton HTTP server (ready, infer) for the healthcheck's tests: what it answers is set per test."""

from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler


class FakeTriton(BaseHTTPRequestHandler):
    ready = 200
    infer_status = 200
    infer_body: dict = {}
    infer_seconds = 0.0  # how long each inference takes
    trickle = False  # answer one byte at a time, forever: no socket timeout ever fires
    inferences: list  # when each inference arrived (set per test)

    def do_GET(self):  # noqa: N802 - http.server's name
        self._answer(self.ready if self.path in ("/v2/health/ready", "/v2/health/live") else 404, {})

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert self.path == "/v2/models/emotion/infer" and body["inputs"][0]["datatype"] == "BYTES"
        if hasattr(self, "inferences"):
            self.inferences.append(time.monotonic())
        time.sleep(self.infer_seconds)
        if self.trickle:
            try:
                for byte in b"HTTP/1.1 200 OK\r\n" * 100:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:  # the check hung up
                pass
            return
        self._answer(self.infer_status, self.infer_body)

    def _answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


GOOD_ANSWER = {
    "outputs": [
        {"name": "LABEL", "datatype": "BYTES", "shape": [1, 1], "data": ["joy"]},
        {"name": "SCORES", "datatype": "FP32", "shape": [1, 6], "data": [0.05, 0.8, 0.05, 0.04, 0.03, 0.03]},
    ]
}
