"""CPU variant of the classifier step (Triton Python backend, configs/local.pbtxt).

Runs the TorchScript file 1/model.pt, the same file the production libtorch
configuration serves. The Python backend hands execute() every request of a
dynamic batch without merging them, so this model does the batching itself:
it strips each row's padding, sorts all rows of all requests by real length
and runs them in chunks of similar length. Short texts never pay for long
ones, and a request of many texts costs no more per text than single texts.
"""

import json
import os

import numpy as np
import torch
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        threads = int(params.get("intra_op_threads", "0"))
        if threads > 0:
            torch.set_num_threads(threads)
        self.max_tokens_per_forward = int(params.get("max_tokens_per_forward", "4096"))
        self.max_length_spread = float(params.get("max_length_spread", "1.25"))
        # The libtorch backend's switch, honoured here too: TorchScript's optimizing executor
        # re-profiles the graph for every new input shape, and every text length is a new shape.
        self.optimized_execution = params.get("DISABLE_OPTIMIZED_EXECUTION", "false").lower() != "true"

        # Padding efficiency (real tokens / computed tokens) on Triton's metrics endpoint.
        # The families must outlive their metrics, so both are kept.
        labels = {"model": args["model_name"], "version": args["model_version"]}
        self.metric_families = [
            pb_utils.MetricFamily(name=name, description=description, kind=pb_utils.MetricFamily.COUNTER)
            for name, description in (
                ("emotion_classifier_real_tokens_total", "Tokens of the texts classified, without padding"),
                ("emotion_classifier_computed_tokens_total", "Tokens the model computed, padding included"),
            )
        ]
        self.real_tokens, self.computed_tokens = (family.Metric(labels=labels) for family in self.metric_families)

        path = os.path.join(args["model_repository"], args["model_version"], "model.pt")
        self.model = torch.jit.load(path, map_location="cpu").eval()
        # The first calls of a TorchScript module profile and optimise the graph;
        # pay for them here rather than in the first user's request.
        with torch.inference_mode(), torch.jit.optimized_execution(self.optimized_execution):
            for length in (8, 16):
                ids = torch.ones((2, length), dtype=torch.int64)
                self.model(ids, torch.ones_like(ids))

    def execute(self, requests, isolate=True):
        rows = []  # (request index, token ids without padding)
        responses = [None] * len(requests)
        for index, request in enumerate(requests):
            ids = pb_utils.get_input_tensor_by_name(request, "INPUT_IDS__0").as_numpy()
            mask = pb_utils.get_input_tensor_by_name(request, "ATTENTION_MASK__1").as_numpy()
            if ids.shape != mask.shape or ids.ndim != 2:
                message = f"INPUT_IDS__0 {ids.shape} and ATTENTION_MASK__1 {mask.shape} must have one equal 2-D shape"
                error = pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG)
                responses[index] = pb_utils.InferenceResponse(error=error)
                continue
            lengths = mask.sum(axis=1)
            rows.extend((index, ids[r, : lengths[r]]) for r in range(len(ids)))

        try:
            logits = self._classify([row_ids for _, row_ids in rows])
        except Exception:  # a request the model cannot read (token ids out of range): find it
            if not isolate:
                raise
            return self._one_by_one(requests, responses)
        per_request = {}
        for (index, _), row_logits in zip(rows, logits, strict=True):
            per_request.setdefault(index, []).append(row_logits)
        for index, parts in per_request.items():
            tensor = pb_utils.Tensor("LOGITS__0", np.stack(parts))
            responses[index] = pb_utils.InferenceResponse(output_tensors=[tensor])
        return responses

    def _one_by_one(self, requests, responses):
        """Runs each remaining request alone, so only a request the model cannot read fails."""
        for index, request in enumerate(requests):
            if responses[index] is not None:
                continue
            try:
                responses[index] = self.execute([request], isolate=False)[0]
            except Exception as error:
                pb_utils.Logger.log_error(f"emotion_classifier: {error}")
                message = "INPUT_IDS__0 holds token ids the model cannot read"
                error = pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG)
                responses[index] = pb_utils.InferenceResponse(error=error)
        return responses

    def _classify(self, sequences):
        """Logits for each sequence, computed in length-sorted chunks."""
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        logits = [None] * len(sequences)
        start = 0
        while start < len(order):
            # Sorted ascending: the chunk's first row is its shortest, its last its longest.
            shortest = len(sequences[order[start]])
            widest = max(shortest * self.max_length_spread, shortest + 8)
            end = start + 1
            while end < len(order):
                width = len(sequences[order[end]])
                if width > widest or (end - start + 1) * width > self.max_tokens_per_forward:
                    break
                end += 1
            chunk = order[start:end]
            width = len(sequences[chunk[-1]])
            ids = np.zeros((len(chunk), width), dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.int64)
            for row, i in enumerate(chunk):
                ids[row, : len(sequences[i])] = sequences[i]
                mask[row, : len(sequences[i])] = 1
            with torch.inference_mode(), torch.jit.optimized_execution(self.optimized_execution):
                out = self.model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
            self.real_tokens.increment(int(mask.sum()))
            self.computed_tokens.increment(mask.size)
            for row, i in enumerate(chunk):
                logits[i] = out[row]
            start = end
        return logits
