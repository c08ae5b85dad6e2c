"""Postprocess step of the `emotion` ensemble (Triton Python backend).

Softmax over the logits and the name of the winning class. Label names come
from this model's `labels` parameter, written by build/build.py. It also counts the
classifier's real and computed tokens (TOKEN_COUNTS) into two counters on Triton's
metrics endpoint: their ratio is the padding efficiency of either classifier variant.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        labels = json.loads(config["parameters"]["labels"]["string_value"])
        self.labels = np.array([label.encode("utf-8") for label in labels], dtype=np.object_)
        # The families must outlive their metrics, so both are kept.
        metric_labels = {"model": args["model_name"], "version": args["model_version"]}
        self.metric_families = [
            pb_utils.MetricFamily(name=name, description=description, kind=pb_utils.MetricFamily.COUNTER)
            for name, description in (
                ("emotion_classifier_real_tokens_total", "Tokens of the texts classified, without padding"),
                ("emotion_classifier_computed_tokens_total", "Tokens the classifier computed, padding included"),
            )
        ]
        self.real_tokens, self.computed_tokens = (
            family.Metric(labels=metric_labels) for family in self.metric_families
        )

    def execute(self, requests):
        # Never raise from here: the Python backend would fail every request of the
        # dynamic batch. A request with unusable logits gets its own error.
        responses = [None] * len(requests)
        usable = []  # (request index, logits)
        token_totals = np.zeros(2, dtype=np.int64)  # real, computed
        for index, request in enumerate(requests):
            try:
                logits = pb_utils.get_input_tensor_by_name(request, "LOGITS").as_numpy()
                token_counts = pb_utils.get_input_tensor_by_name(request, "TOKEN_COUNTS")
                if token_counts is not None:
                    token_totals += token_counts.as_numpy().sum(axis=0)
                problem = self._check(logits)
            except Exception as error:  # an unexpected failure: one line for the client, details in the log
                pb_utils.Logger.log_error(f"emotion_postprocess: {type(error).__name__}: {error}")
                problem = f"LOGITS could not be read ({type(error).__name__})"
            if problem:
                error = pb_utils.TritonError(problem, pb_utils.TritonError.INVALID_ARG)
                responses[index] = pb_utils.InferenceResponse(error=error)
            else:
                usable.append((index, logits))
        # Once per execution, not per request: each update is a round trip to the server process.
        self.real_tokens.increment(int(token_totals[0]))
        self.computed_tokens.increment(int(token_totals[1]))
        if not usable:
            return responses

        # One vectorised softmax over the whole dynamic batch, then split per request.
        everything = np.concatenate([logits for _, logits in usable]).astype(np.float32)
        shifted = np.exp(everything - everything.max(axis=1, keepdims=True))
        scores = shifted / shifted.sum(axis=1, keepdims=True)
        names = self.labels[scores.argmax(axis=1)].reshape(-1, 1)
        start = 0
        for index, logits in usable:
            end = start + len(logits)
            responses[index] = pb_utils.InferenceResponse(
                output_tensors=[
                    pb_utils.Tensor("LABEL", names[start:end]),
                    pb_utils.Tensor("SCORES", scores[start:end]),
                ]
            )
            start = end
        return responses

    def _check(self, logits):
        """None when the request's logits are usable, otherwise the reason."""
        if logits.ndim != 2 or logits.shape[1] != len(self.labels):
            return f"LOGITS has shape {list(logits.shape)}: expected [n, {len(self.labels)}], one logit per label"
        if not np.isfinite(logits).all():
            return "LOGITS holds NaN or infinite values"
        return None
