"""Tokenizer step of the `emotion` ensemble (Triton Python backend).

Each request carries TEXT of shape [n, 1] (UTF-8 bytes). A text that cannot
be classified (empty, whitespace only, a NUL character, not UTF-8, longer than
`max_text_bytes`) fails its own request with a clear INVALID_ARGUMENT message;
the other requests of the same dynamic batch are answered normally.
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.max_length = int(params["max_length"])
        self.max_text_bytes = int(params["max_text_bytes"])

        path = os.path.join(args["model_repository"], args["model_version"], "tokenizer.json")
        self.tokenizer = Tokenizer.from_file(path)
        # build/build.py saves the file with padding enabled, which names the pad token.
        padding = self.tokenizer.padding
        if padding is None:
            raise pb_utils.TritonModelException(f"{path} has no padding settings; rebuild it with build/build.py")
        self.tokenizer.enable_truncation(max_length=self.max_length)
        self.tokenizer.enable_padding(pad_id=padding["pad_id"], pad_token=padding["pad_token"])

    def execute(self, requests):
        # Never raise from here: the Python backend would fail every request of the
        # dynamic batch. Each request gets its own answer or its own error.
        responses = []
        for request in requests:
            try:
                responses.append(self._tokenize(request))
            except Exception as error:  # an unexpected failure: one line for the client, details in the log
                pb_utils.Logger.log_error(f"emotion_tokenizer: {type(error).__name__}: {error}")
                message = f"TEXT could not be tokenized ({type(error).__name__})"
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(message)))
        return responses

    def _tokenize(self, request):
        raw = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
        texts, problem = self._decode(raw)
        if problem:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(problem, pb_utils.TritonError.INVALID_ARG))
        encodings = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        empty = np.flatnonzero(mask.sum(axis=1) == 0)
        if len(
            empty
        ):  # nothing for the classifier to read (only possible with a tokenizer that adds no special tokens)
            message = f"TEXT[{empty[0]}] has no tokens the model knows"
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG))
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("INPUT_IDS", ids),
                pb_utils.Tensor("ATTENTION_MASK", mask),
            ]
        )

    def _decode(self, raw):
        """Returns (texts, None), or (None, message) for the first unusable text."""
        texts = []
        for row, value in enumerate(raw):
            if isinstance(value, str):  # HTTP JSON inputs can arrive already decoded
                value = value.encode("utf-8")
            if len(value) > self.max_text_bytes:
                return None, (
                    f"TEXT[{row}] is {len(value)} bytes; the limit is {self.max_text_bytes} "
                    f"(the model reads only the first {self.max_length} tokens)"
                )
            try:
                text = value.decode("utf-8")
            except UnicodeDecodeError as error:
                return None, f"TEXT[{row}] is not valid UTF-8 (byte {error.start})"
            if "\x00" in text:
                return None, f"TEXT[{row}] contains a NUL character"
            if not text.strip():
                return None, f"TEXT[{row}] is empty"
            texts.append(text)
        if not texts:
            return None, "TEXT holds no texts"
        return texts, None
