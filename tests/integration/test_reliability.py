"""Faults and shutdown of real tritonservers: a killed Python stub, SIGTERM under load, a broken or
missing model refused at start in one line, and a short soak.

Every test ends by checking that the server it used (or the one that replaced it) is live and
ready and still gives the known answers: those of the eager model the tiny repository was
built from (bad input: test_bad_requests.py; overload: test_overload.py).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time

import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from emotion_lab.perf import soak
from emotion_triton.serving.local_server import SHM_DIR, LocalServer, ServerOptions
from emotion_triton.serving.preflight import ServerError
from tests.helpers.serve_process import ServeProcess, running, serve_command
from tests.helpers.servers import start_server
from tests.helpers.triton_requests import (
    FAMILY,
    SLOW_TEXT,
    assert_clear,
    assert_local_server_serving,
    assert_serving,
    grpc_infer,
    http_infer,
    http_request,
    metric,
    text_input,
    variant,
)

# -- faults ----------------------------------------------------------------------------------------


def test_a_killed_stub_is_detected_and_tritonserver_restarted_until_restarts_run_out(built_repository, known, tmp_path):
    repository, _ = built_repository(FAMILY)
    serve = ServeProcess(
        repository,
        tmp_path / "triton.log",
        *("--canary-interval", "0.5", "--canary-failures", "2", "--max-restarts", "1", "--exit-timeout", "3"),
    )
    try:
        serve.wait_for("Ctrl-C stops it", 180)
        assert_serving(serve.http_url, serve.grpc_url, known)
        regions = serve.shm_regions()

        # The tokenizer's stub dies: Triton 2.51 stays "ready" and answers 500, the canary notices.
        stubs = serve.stubs()
        killed = time.monotonic()
        stubs["emotion_tokenizer"].kill()
        detected = serve.wait_for("restarting tritonserver (1/1)", 30)
        # two tokenizer instances: the canary reaches the dead one within a few checks
        assert re.search(r"Stub process 'emotion_tokenizer_0_\d' is not healthy", serve.output[-1])
        # Detected by the canary: its failures, in a row, up to --canary-failures, named the dead stub.
        failures = [line for line in serve.output if line.startswith("canary failed (")]
        assert failures[-1].startswith("canary failed (2/2)") and "emotion_tokenizer" in failures[-1], failures
        restarted = serve.wait_for("tritonserver restarted: the ensemble answers again", 180)
        print(
            f"killed tokenizer stub: detected after {detected - killed:.1f} s, serving again after {restarted - killed:.1f} s"
        )
        assert_serving(serve.http_url, serve.grpc_url, known)
        assert (
            set(serve.stubs()) == set(stubs)
            and serve.stubs()["emotion_tokenizer"].pid != stubs["emotion_tokenizer"].pid
        )
        regions |= serve.shm_regions()

        # The postprocess stub dies too: the one restart allowed is used up, so the server gives up.
        killed = time.monotonic()
        serve.stubs()["emotion_postprocess"].kill()
        code = serve.process.wait(60)
        output = serve.rest_of_output()
        assert code == 1, output
        assert "error: the ensemble stopped answering" in output and "emotion_postprocess_0_" in output, output
        print(f"killed postprocess stub: exit code {code} after {time.monotonic() - killed:.1f} s")
        assert "canary failed (2/2)" in output.split("error: the ensemble stopped answering")[0], output
        # Nothing is left behind: no process, no port, no shared memory of the killed stubs.
        assert not [process for process in serve.seen.values() if running(process)]
        assert not [key for key in regions if (SHM_DIR / key).exists()]
        for port in serve.ports:
            with pytest.raises(OSError):
                http_request(f"127.0.0.1:{port}", "GET", "/v2/health/live", timeout=2)
    finally:
        serve.close()


def test_sigterm_under_load_finishes_requests_in_flight_and_exits_in_time(built_repository, known, tmp_path):
    """SIGTERM to `python -m emotion_triton.commands.serve`, as the README's "Operating it" describes it.

    tritonserver closes its HTTP listener at once (new connections are refused) and keeps serving
    gRPC and the HTTP connections already open; the local server keeps it in that phase until the
    requests in flight are done (Triton 2.51 would otherwise refuse their next ensemble step). Then
    new requests are refused (gRPC NOT_FOUND, then UNAVAILABLE) and it exits.
    """
    source, checkpoint = built_repository(FAMILY)
    repository = variant(
        source,
        tmp_path / "repo",
        checkpoint,
        max_tokens_per_forward=128,
        timeout_us=30_000_000,  # the queue timeout is not what this test is about
    )
    exit_timeout = 20
    # The Python-backend classifier: only its one-row chunks keep a tiny model's requests in flight
    # for seconds (the native ones answer them within a metrics interval). Shutdown is the
    # server's and the supervisor's; the overload and bad-input tests cover every variant.
    serve = ServeProcess(
        repository, tmp_path / "triton.log", "--exit-timeout", str(exit_timeout), "--classifier", "onnx"
    )
    try:
        serve.wait_for("Ctrl-C stops it", 180)
        assert_serving(serve.http_url, serve.grpc_url, known)
        regions = serve.shm_regions()
        results, barrier = [], threading.Barrier(8 + 1)

        def in_flight(index: int) -> None:
            module = grpcclient if index % 2 else httpclient  # tritonclient.http: one client per thread
            client = module.InferenceServerClient(serve.grpc_url if index % 2 else serve.http_url)
            try:
                client.infer("emotion", [text_input(module, ["hello"])])  # the connection is open before the load
                barrier.wait(timeout=60)
                result = client.infer("emotion", [text_input(module, [SLOW_TEXT] * 64)])
                results.append(result.as_numpy("SCORES").shape)
            except InferenceServerException as error:
                results.append(f"{error.status()} {error.message()}")
            finally:
                client.close()  # a client that got its answer goes away

        threads = [threading.Thread(target=in_flight, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        barrier.wait(timeout=60)
        deadline = time.monotonic() + 5
        while metric(serve.metrics_url, "nv_inference_pending_request_count", r"emotion_\w+") < 3:
            assert time.monotonic() < deadline, "the requests never reached the server"
            time.sleep(0.02)
        signalled = time.monotonic()  # at least three requests are queued or running in the ensemble's steps
        serve.process.send_signal(signal.SIGTERM)
        serve.wait_for("stopping tritonserver", 10)  # the signal went through the supervisor to tritonserver
        time.sleep(0.2)

        http_new, grpc_new = [], []
        while serve.process.poll() is None and time.monotonic() - signalled < exit_timeout + 10:
            start = time.monotonic()
            try:
                inputs = [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": ["hi"]}]
                http_new.append(http_infer(serve.http_url, inputs)[0])
            except OSError:
                http_new.append("refused")
            status, answer = grpc_infer(serve.grpc_url, [text_input(grpcclient, ["hi"])], timeout=exit_timeout)
            grpc_new.append((status, answer.as_numpy("SCORES").shape if status == "OK" else answer))
            assert time.monotonic() - start < 10, "a new request hung during shutdown"
            time.sleep(0.2)
        code = serve.process.wait(exit_timeout + 10)
        exited = time.monotonic() - signalled
        for thread in threads:
            thread.join(30)
        output = serve.rest_of_output()

        assert results == [(64, len(known[0]))] * 8, results  # every request in flight answered
        assert code == 0 and "tritonserver stopped (exit code 0)" in output, output
        assert exited < exit_timeout + 5, f"exited {exited:.1f} s after SIGTERM"
        assert http_new and set(http_new) == {"refused"}, http_new  # new HTTP connections: refused at once
        # gRPC: answered (correctly) while tritonserver drains, then refused (a request caught at the switch
        # is refused at its next step, "Server is stopping"), never answered again.
        statuses = [status for status, _ in grpc_new]
        refused = next((i for i, status in enumerate(statuses) if status != "OK"), len(statuses))
        assert refused < len(statuses), f"no new gRPC request was refused before the exit: {statuses}"
        assert set(statuses[refused:]) <= {"NOT_FOUND", "UNAVAILABLE"}, grpc_new
        assert all(answer == (1, len(known[0])) for status, answer in grpc_new if status == "OK")
        for _, message in grpc_new[refused:]:
            assert_clear(message)
            assert any(why in message for why in ("no available versions", "Server is stopping", "failed to connect"))
        assert not [key for key in regions if (SHM_DIR / key).exists()], "shared memory left behind"
        for port in serve.ports:  # free again
            with pytest.raises(OSError):
                http_request(f"127.0.0.1:{port}", "GET", "/v2/health/live", timeout=2)
    finally:
        serve.close()


@pytest.mark.parametrize(
    ("missing", "classifier"),
    [("model.onnx", "onnx"), ("model.pt", "libtorch"), ("tokenizer.json", "onnx")],
)
def test_a_missing_model_file_is_refused_before_start(built_repository, tmp_path, missing, classifier):
    """Each variant needs its own model file (model.onnx or model.pt) and the tokenizer's."""
    source, _ = built_repository(FAMILY)
    repository = shutil.copytree(source, tmp_path / "repo")
    next(repository.glob(f"*/1/{missing}")).unlink()
    options = ServerOptions.on_free_ports(
        repository=repository,
        classifier=classifier,
    )
    with pytest.raises(ServerError, match=f"{missing} is missing: build the model with `python build/build.py"):
        LocalServer(options).preflight()


@pytest.mark.parametrize(
    ("broken", "how", "classifier"),
    [
        ("model.onnx", "missing", "onnx"),
        ("model.pt", "missing", "libtorch"),
        ("tokenizer.json", "corrupt", "onnx"),
    ],
)
def test_the_server_refuses_to_start_on_a_broken_model_with_a_one_line_cause(
    built_repository, tmp_path, broken, how, classifier
):
    source, _ = built_repository(FAMILY)
    repository = shutil.copytree(source, tmp_path / "repo")
    target = next(repository.glob(f"*/1/{broken}"))
    if how == "missing":
        target.unlink()
    else:
        target.write_text('{"version": "1.0", "truncated')
    command, ports = serve_command(repository, "--classifier", classifier)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 1
    expected = "is missing: build the model with" if how == "missing" else "cannot be loaded ("
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert broken in result.stderr and expected in result.stderr, result.stderr
    for port in ports:  # no tritonserver was started
        with pytest.raises(OSError):
            http_request(f"127.0.0.1:{port}", "GET", "/v2/health/live", timeout=2)


# -- soak ------------------------------------------------------------------------------------------


def test_a_short_soak_answers_everything_and_keeps_memory_and_answers_steady(built_repository, known, tmp_path):
    """`make soak` in small: the same checks (soak.run), 12 s of load after a 3 s warm-up."""
    repository, _ = built_repository(FAMILY)
    server = start_server(repository, tmp_path)
    try:
        report = soak.run(soak.SoakOptions(seconds=12, warmup=3, concurrency=8, bad_share=0.15), server)
        print("\n".join(report.summary()))
        assert report.ok, report.violations
        assert (
            report.outcomes[("good", "ok")] > 50 and sum(n for (k, _), n in report.outcomes.items() if k == "bad") > 5
        )
        assert report.server_successes >= report.outcomes[("good", "ok")]
        assert_local_server_serving(server, known)
    finally:
        server.stop()
