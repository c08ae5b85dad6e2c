"""The local server's checks before start, its messages, and a clean stop on SIGTERM."""

import shutil
import signal
import socket
import subprocess

import pytest

from emotion_triton.serving.local_server import LocalServer, ServerOptions
from emotion_triton.serving.preflight import ServerError, check_port_free, free_port
from tests.helpers.serve_process import serve_command


def options(repository, **kwargs):
    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    return ServerOptions(repository=repository, **{**ports, **kwargs})


def test_a_port_in_use_is_one_line_with_the_fix(built_repository):
    repository, _ = built_repository("distilbert")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        with pytest.raises(ServerError, match=f"HTTP port 127.0.0.1:{busy} is in use.*HTTP_PORT="):
            LocalServer(options(repository, http_port=busy)).preflight()


@pytest.mark.parametrize(
    ("broken", "classifier"),
    [("model.onnx", "onnx"), ("model.pt", "libtorch"), ("tokenizer.json", "onnx")],
)
def test_a_corrupt_model_file_is_refused_before_start(tmp_path, built_repository, broken, classifier):
    source, _ = built_repository("distilbert")
    repository = tmp_path / "repo"
    shutil.copytree(source, repository)
    target = next(repository.glob(f"*/1/{broken}"))
    target.write_bytes(target.read_bytes()[:100])
    with pytest.raises(ServerError, match=f"{broken} cannot be loaded .*rebuild it"):
        LocalServer(options(repository, classifier=classifier)).preflight()


def test_a_repository_built_before_model_onnx_names_the_variant_that_serves_it(tmp_path, built_repository):
    source, _ = built_repository("distilbert")
    repository = tmp_path / "repo"
    shutil.copytree(source, repository)
    next(repository.glob("*/1/model.onnx")).unlink()
    with pytest.raises(ServerError, match=r"model.onnx is missing: build .*--classifier libtorch"):
        LocalServer(options(repository)).preflight()
    LocalServer(options(repository, classifier="libtorch")).preflight()  # model.pt is all it needs


def test_main_job_serves_then_stops_cleanly_on_sigterm(built_repository, tmp_path):
    repository, _ = built_repository("bert")
    command, ports = serve_command(repository, "--log-file", str(tmp_path / "triton.log"))
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("Ctrl-C stops it"):
            break
    output = "".join(lines)
    assert f"http://127.0.0.1:{ports[0]}" in output and f"127.0.0.1:{ports[1]}" in output, output
    process.send_signal(signal.SIGTERM)
    rest, _ = process.communicate(timeout=60)
    assert process.returncode == 0, rest
    assert "tritonserver stopped" in rest
    for port in ports:  # free again: tritonserver is gone
        check_port_free("127.0.0.1", port, "HTTP")
