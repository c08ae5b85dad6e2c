"""What the Python-backend classifier (onnx_model.py) does with a dynamic batch of requests.

Imported as a sibling module: the Python backend puts a model's version folder on sys.path.
"""

import contextlib

import triton_python_backend_utils as pb_utils


class RaggedClassifierModel:
    """execute() and finalize() of the classifier: a subclass sets `self.cores` (a CoreSharing, or
    None) in initialize() and defines `_forward`."""

    cores = None

    def finalize(self):
        if self.cores:
            self.cores.close()

    def execute(self, requests):
        # One request in a dynamic batch means the queue held nothing else: spreading it over
        # idle cores costs no other request anything.
        with self.cores.busy(spread=len(requests) == 1) if self.cores else contextlib.nullcontext():
            return answer(requests, self._forward)


def answer(requests, forward, isolate=True):
    """Responses to `requests`, in order; `forward([(ids, mask), ...])` -> (logits, token_counts) of all rows.

    A request with malformed inputs fails alone. When the batch fails as a whole (token ids past
    the vocabulary), each request runs alone, so only the one the model cannot read fails.
    """
    inputs = {}  # request index -> (ids, mask)
    responses = [None] * len(requests)
    for index, request in enumerate(requests):
        ids = pb_utils.get_input_tensor_by_name(request, "INPUT_IDS__0").as_numpy()
        mask = pb_utils.get_input_tensor_by_name(request, "ATTENTION_MASK__1").as_numpy()
        if ids.shape != mask.shape or ids.ndim != 2:
            message = f"INPUT_IDS__0 {ids.shape} and ATTENTION_MASK__1 {mask.shape} must have one equal 2-D shape"
            responses[index] = _error(message)
        elif ids.size and ids.min() < 0:  # ONNX Runtime's Gather would wrap a negative id around
            responses[index] = _error("INPUT_IDS__0 holds negative token ids")
        else:
            inputs[index] = (ids, mask)
    if not inputs:
        return responses
    try:
        logits, token_counts = forward(list(inputs.values()))
    except Exception as error:
        if not isolate:
            raise
        if len(requests) == 1:
            return [_unreadable(error)]
        for index, request in enumerate(requests):
            if responses[index] is None:
                try:
                    responses[index] = answer([request], forward, isolate=False)[0]
                except Exception as alone:
                    responses[index] = _unreadable(alone)
        return responses
    start = 0
    for index, (ids, _) in inputs.items():
        end = start + len(ids)
        responses[index] = pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("LOGITS__0", logits[start:end]),
                pb_utils.Tensor("TOKEN_COUNTS__1", token_counts[start:end]),
            ]
        )
        start = end
    return responses


def _unreadable(error):
    pb_utils.Logger.log_error(f"emotion_classifier: {error}")
    return _error("INPUT_IDS__0 holds token ids the model cannot read")


def _error(message):
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG))
