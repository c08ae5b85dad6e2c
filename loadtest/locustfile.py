"""Locust load test of the `emotion` ensemble on Triton: texts/s, latency, failures and accuracy under load.

    locust -f loadtest/locustfile.py                                      # web UI on http://localhost:8089
    locust -f loadtest/locustfile.py --headless -u 8 -r 8 -t 2m --csv results/loadtest/run --html results/loadtest/run.html
    locust -f loadtest/locustfile.py --headless --host http://127.0.0.1:8000 --shape step --step-users 2 --step-max-users 16

The server is Locust's Host (`--host`, or the web page's Host field), a URL whose scheme is the
protocol: grpc://127.0.0.1:8001 (the default, the local server's gRPC port) or http://127.0.0.1:8000.

Users: `TritonUser` sends the task mix (single texts, batches of 8 and 64, a share of long texts near
the truncation limit); `AccuracyUser` (one) sends labelled texts in file order and checks every
label. Options: `python loadtest/locustfile.py --help`, group "emotion ensemble". A headless run
exits non-zero when a threshold is crossed (failure ratio, p95 latency, texts/s, accuracy). The web
page charts texts/s and accuracy beside Locust's own charts. The logic lives in `emotion_lab.loadtest` (lab/).
"""

from __future__ import annotations

import itertools
import logging
import random

import gevent
from locust import LoadTestShape, User, events, task
from locust.exception import StopUser
from locust.runners import WorkerRunner

from emotion_lab import loadtest

logger = logging.getLogger("emotion.loadtest")
session = loadtest.Session()
charts = loadtest.ChartHistory()
_recorder = None  # the greenlet recording the charts while a test runs
_user_numbers = itertools.count()

# grpc's C core would block gevent's loop on every call (users would take turns) unless set to gevent
# I/O before the first channel exists. tritonclient's HTTP client is gevent-based already.
loadtest.use_gevent_for_grpc()


@events.init_command_line_parser.add_listener
def _add_options(parser, **_kwargs):
    loadtest.add_options(parser)


@events.init.add_listener
def _show_the_host_and_the_charts(environment, **_kwargs):
    # Without --host the users' own host is the server: the web page's header and the report show it too.
    environment.host = environment.host or EmotionUser.host
    if environment.web_ui:
        loadtest.register_web_charts(environment.web_ui.app, charts, lambda: environment.host)


@events.test_start.add_listener
def _start_the_charts(environment, **_kwargs):
    global _recorder
    if isinstance(environment.runner, WorkerRunner):
        return  # the master holds the statistics
    charts.reset()
    _recorder = gevent.spawn(_record_the_charts, environment)


def _record_the_charts(environment):
    while True:
        gevent.sleep(1)
        charts.record(environment.stats, environment.runner.user_count)


@events.test_stop.add_listener
def _stop_the_charts(environment, **_kwargs):
    if _recorder is not None:
        _recorder.kill()
        charts.record(environment.stats, environment.runner.user_count)


@events.test_start.add_listener
def _prepare(environment, **_kwargs):
    try:
        session.prepare(environment.parsed_options, environment.host)
    except Exception as error:  # server down, bad --data, bad options: one line, then stop
        session.error = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        logger.error("the load test cannot start: %s", session.error)
        headless = getattr(environment.parsed_options, "headless", False)
        gevent.spawn(environment.runner.quit if headless else environment.runner.stop)
        return
    logger.info(loadtest.describe(session.settings, session.server))


class EmotionUser(User):
    abstract = True
    host = loadtest.DEFAULT_HOST  # prefilled in the web page's Host field; --host or the field replaces it

    def wait_time(self):
        return random.uniform(0, session.settings.wait) if session.settings and session.settings.wait else 0

    def on_start(self):
        if session.workload is None:
            raise StopUser()
        self.client = session.settings.client()  # one client per user: the HTTP client is not thread-safe
        self.rng = random.Random(session.settings.seed * 100003 + next(_user_numbers))

    def on_stop(self):
        if getattr(self, "client", None) is not None:
            self.client.close()

    def send(self, name, texts, expected=None):
        loadtest.call(self.environment, self.client, session.settings, session.server, name, texts, expected)


class TritonUser(EmotionUser):
    """The task mix: batch sizes and weights from --batch-sizes, long texts for --long-share of requests."""

    @task
    def infer(self):
        name, texts = session.workload.pick(self.rng)
        self.send(name, texts)


class AccuracyUser(EmotionUser):
    """Labelled texts in file order (--accuracy-batch-size per request), every answer checked."""

    fixed_count = 1

    def on_start(self):
        super().on_start()
        self.position = 0

    @task
    def check(self):
        name, texts, labels, self.position = session.workload.labelled(self.position)
        self.send(name, texts, labels)


class LoadShape(loadtest.ShapeLogic, LoadTestShape):
    """--shape steady (-u, -r, -t) or --shape step (--step-users, --step-seconds, --step-max-users)."""

    @property
    def cpu(self):
        return session.cpu


@events.quitting.add_listener
def _judge(environment, **_kwargs):
    if isinstance(environment.runner, WorkerRunner) or (session.settings is None and session.error is None):
        return  # workers report to the master; nothing ran (a web UI left without a test)
    options = environment.parsed_options
    if session.error is not None:
        session.report = [f"result:      FAIL (the load test could not start: {session.error})"]
        environment.process_exit_code = 1
        return
    extra = session.cpu.report() if session.cpu else []
    shape = environment.shape_class
    if isinstance(shape, loadtest.ShapeLogic) and options.shape == "step":
        shape.finish()
        extra += shape.step_report(options.knee_latency_factor)
    results = loadtest.Results.from_stats(environment.stats, len(environment.runner.exceptions))
    lines, crossed = loadtest.report(
        results, loadtest.Thresholds.from_options(options), loadtest.describe(session.settings, session.server), extra
    )
    for line in crossed:
        logger.error("threshold crossed: %s", line)
    session.report = lines
    environment.process_exit_code = 1 if crossed else 0


@events.quit.add_listener
def _print_report(**_kwargs):
    if session.report:
        print("\n".join(session.report), flush=True)


if __name__ == "__main__":
    # `python loadtest/locustfile.py --help`: locust's help with this load test's options. (`locust --help`
    # lacks them: locust 2.47 prints its help before it imports a locustfile, locust issue #2917.)
    from locust.argument_parser import get_parser

    get_parser().parse_args()
