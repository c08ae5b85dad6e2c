"""Texts per second and accuracy under load as charts on Locust's web page, beside Locust's own.

Locust's charts plot requests/s and response times of all requests; the numbers this load test exists
for are rows of its statistics table (`TEXTS answered texts`, `ACCURACY labelled texts`). While a test
runs, the locustfile records them once a second (`ChartHistory.record`); `register_web_charts` serves them as
JSON at `emotion/charts` and, the way Locust's docs extend its web UI (a Flask `after_request` hook),
adds `web_charts.js` to Locust's page, which draws them on its Charts tab.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from .options import ACCURACY, TEXTS, parse_host

SCRIPT = Path(__file__).with_name("web_charts.js")
CHARTS_PATH = "/emotion/charts"  # the JSON of the points
SCRIPT_PATH = "/emotion/charts.js"


@dataclass
class ChartHistory:
    """One point a second of the current test: texts/s (Locust's current rate of the texts entry) and
    the accuracy of the labelled texts checked so far (None before the first)."""

    points: list[dict] = field(default_factory=list)
    limit: int = 3600  # an hour of points; older ones are dropped

    def reset(self) -> None:
        self.points = []

    def record(self, stats, users: int, now: float | None = None) -> dict:
        texts = stats.get(TEXTS[1], TEXTS[0])
        labelled = stats.get(ACCURACY[1], ACCURACY[0])
        checked = labelled.num_requests
        point = {
            "time": round(time.time() if now is None else now, 3),
            "texts_per_second": round(float(texts.current_rps), 3),
            "accuracy": round((checked - labelled.num_failures) / checked, 5) if checked else None,
            "labelled_texts": checked,
            "users": users,
        }
        self.points = [*self.points[-(self.limit - 1) :], point]
        return point


def with_script(page: str) -> str:
    """Locust's page with the charts' script added before `</body>` (relative: --web-base-path holds)."""
    tag = f'<script src=".{SCRIPT_PATH}" defer></script>'
    return page.replace("</body>", f"{tag}</body>", 1) if tag not in page else page


def register_web_charts(app, history: ChartHistory, host) -> None:
    """Adds the charts to Locust's Flask app (their data, their script, and the script on its page), and
    refuses a Host that is not a server URL when the page's form is sent. `host()` is the server under test."""
    from flask import Response, jsonify, request  # locust's web UI is Flask: only ever called inside locust

    @app.before_request
    def refuse_a_host_that_is_not_a_server_url():
        # As Locust answers a form it cannot run: the page shows the message, the test does not start.
        if request.method == "POST" and request.path.rstrip("/").endswith("/swarm") and request.form.get("host"):
            try:
                parse_host(request.form["host"])
            except ValueError as error:
                return jsonify({"success": False, "message": str(error), "host": host()})
        return None

    @app.route(CHARTS_PATH)
    def emotion_charts():
        return jsonify({"host": host(), "points": history.points})

    @app.route(SCRIPT_PATH)
    def emotion_charts_script():
        return Response(SCRIPT.read_text(encoding="utf-8"), mimetype="text/javascript")

    @app.after_request
    def add_the_charts_to_the_page(response):
        if request.path.rstrip("/") == "" and response.mimetype == "text/html" and not response.direct_passthrough:
            response.set_data(with_script(response.get_data(as_text=True)))
        return response
