"""Postprocess step of the `emotion` ensemble (Triton Python backend).

Softmax over the logits and the name of the winning class. Label names come
from this model's `labels` parameter, written by build/build.py.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        labels = json.loads(config["parameters"]["labels"]["string_value"])
        self.labels = np.array([label.encode("utf-8") for label in labels], dtype=np.object_)

    def execute(self, requests):
        logits = [pb_utils.get_input_tensor_by_name(r, "LOGITS").as_numpy() for r in requests]
        # One vectorised softmax over the whole dynamic batch, then split per request.
        everything = np.concatenate(logits).astype(np.float32)
        if everything.shape[1] != len(self.labels):
            message = f"the classifier returned {everything.shape[1]} logits for {len(self.labels)} labels"
            return [pb_utils.InferenceResponse(error=pb_utils.TritonError(message)) for _ in requests]
        shifted = np.exp(everything - everything.max(axis=1, keepdims=True))
        scores = shifted / shifted.sum(axis=1, keepdims=True)
        names = self.labels[scores.argmax(axis=1)].reshape(-1, 1)

        responses = []
        start = 0
        for part in logits:
            end = start + len(part)
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("LABEL", names[start:end]),
                        pb_utils.Tensor("SCORES", scores[start:end]),
                    ]
                )
            )
            start = end
        return responses
