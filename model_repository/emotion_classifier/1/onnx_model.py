"""The classifier step on ONNX Runtime inside a Python-backend model (configs/onnx.pbtxt), on the CPU.

Runs 1/model.onnx, the build's ONNX export of the same fine-tuned weights as 1/model.pt (fp32, or
int8 by ONNX Runtime's dynamic quantization), with the inputs and outputs of ../config.pbtxt. The
file takes a ragged batch; this model does what model.pt's graph does on the CPU first: it cuts
every request's rows from their padding, sorts them by length and hands the file chunks of similar
length (at most 1.25x longer than their shortest), so short texts never pay for long ones.
"""

import json
import os

import numpy as np
import onnxruntime as ort
from core_sharing import CoreSharing
from ragged_requests import RaggedClassifierModel


class TritonPythonModel(RaggedClassifierModel):
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.max_length_spread = float(params["max_length_spread"])
        self.max_tokens_per_forward = int(params["max_tokens_per_forward"])
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = open_session(path, int(params["intra_op_threads"]), spinning=False)
        threads_alone = int(params["intra_op_threads_alone"])
        self.cores, self.session_alone = None, None
        if threads_alone > int(params["intra_op_threads"]):
            # A session's thread count is fixed: a second one runs a lone request on every core,
            # its idle threads spinning between operators (measured 2.8 ms against 4.4 ms asleep).
            self.cores = CoreSharing(args, config)
            self.session_alone = open_session(path, threads_alone, spinning=True)

    def _forward(self, batch):
        """Logits [rows, labels] and token counts [rows, 2] (real, computed) of every row of `batch`."""
        rows = [ids[r][mask[r] != 0] for ids, mask in batch for r in range(len(ids))]
        lengths = np.array([len(row) for row in rows], dtype=np.int64)
        results = [None] * len(rows)
        order = np.argsort(lengths, kind="stable")
        session = self.session_alone if self.cores and self.cores.alone() else self.session
        begin = 0
        while begin < len(rows):
            # The same chunks as model.pt's graph (RaggedClassifier): sorted ascending, a chunk's
            # longest row is at most `spread` times (or 8 tokens more than) its shortest.
            shortest = lengths[order[begin]]
            widest = max(shortest * self.max_length_spread, shortest + 8.0)
            end = begin + 1
            while (
                end < len(rows)
                and lengths[order[end]] <= widest
                and (end - begin + 1) * lengths[order[end]] <= self.max_tokens_per_forward
            ):
                end += 1
            members = order[begin:end]
            ids = np.concatenate([rows[row] for row in members]).astype(np.int64)
            feed = {
                "INPUT_IDS__0": ids,
                "ATTENTION_MASK__1": np.ones_like(ids),
                "ROW_WIDTHS__2": lengths[members].astype(np.int32).reshape(-1, 1),
            }
            logits, token_counts = session.run(["LOGITS__0", "TOKEN_COUNTS__1"], feed)
            for slot, row in enumerate(members):
                results[row] = (logits[slot], token_counts[slot])
            begin = end
        return np.stack([r[0] for r in results]), np.stack([r[1] for r in results])


def open_session(path, threads, spinning):
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle intra-op threads spin between operators only in the lone-request session, and stop when
    # its run ends: a thread still spinning then takes a core from the next step (measured: p50
    # 13.6 ms against 7.2 at one client when they went on spinning).
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.add_session_config_entry("session.force_spinning_stop", "1")
    options.log_severity_level = 3  # errors only: the graph's If makes the optimizer warn per subgraph input
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
