"""The classifier step on ONNX Runtime inside a Python-backend model (the `onnx` variant), on the CPU.

Runs 1/model.onnx, the build's ONNX export of the same fine-tuned weights as 1/model.pt (fp32, or
int8 by ONNX Runtime's dynamic quantization): a padded [rows, width] batch in, logits out. This
step does what model.pt's graph does on the CPU: it cuts every request's rows from their padding
and runs them in the length buckets of length_buckets.py, so short texts never pay for long ones.
"""

import json
import os

from core_sharing import CoreSharing
from length_buckets import LengthBuckets, run_in_chunks, unpadded_rows
from onnx_session import open_session
from ragged_requests import RaggedClassifierModel


class TritonPythonModel(RaggedClassifierModel):
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.buckets = LengthBuckets(params)
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
        session = self.session_alone if self.cores and self.cores.alone() else self.session

        def forward(ids, mask):
            return session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]

        return run_in_chunks(unpadded_rows(batch), forward, self.buckets)
