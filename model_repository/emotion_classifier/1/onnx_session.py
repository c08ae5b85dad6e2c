"""The one way every part of the project opens model.onnx with ONNX Runtime: the classifier's Python
step (onnx_model.py, a sibling module), and the build's checks, the server's preflight and the
benchmark's in-process reference (through emotion_triton.repository.classifier_module)."""

import onnxruntime as ort


def open_session(path, threads=0, spinning=None):
    """An inference session on the CPU with `threads` intra-op threads (0: ONNX Runtime's default).

    `spinning` (None: ONNX Runtime's default, for a caller that owns the machine): whether idle
    intra-op threads spin between operators. A server step sets it: where they spin (a lone request
    on idle cores) they stop when the run ends, so a thread still spinning never takes a core from
    the next step (measured: p50 13.6 ms against 7.2 at one client when they went on spinning).
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if spinning is not None:
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        options.add_session_config_entry("session.force_spinning_stop", "1")
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
