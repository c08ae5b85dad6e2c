"""The length-bucketing policy of every classifier variant: which rows of a batch run together.

One implementation for all of them. build/ compiles `chunk_ends` into model.pt's TorchScript graph
(so it is written in TorchScript's subset of Python), onnx_model.py calls it in the Python step, and
the build's checks of model.onnx and its int8 gate run `run_in_chunks` exactly as the server does.
The policy's numbers are parameters of the production config.pbtxt, which every variant derives from.

Imported as a sibling module by onnx_model.py (the Python backend puts the version folder on
sys.path) and loaded from the repository by the build (emotion_triton.repository.classifier_module).
"""

import numpy as np


def chunk_ends(
    sorted_lengths: list[int], max_length_spread: float, min_length_slack: int, max_tokens_per_forward: int
) -> list[int]:
    """The end (exclusive) of each chunk of rows sorted by ascending length.

    A chunk's longest row is at most `max_length_spread` times, or `min_length_slack` tokens more
    than, its shortest (short texts never pay for long ones), and a chunk holds at most
    `max_tokens_per_forward` padded tokens (the memory of one forward pass stays bounded).
    """
    ends: list[int] = []
    rows = len(sorted_lengths)
    begin = 0
    while begin < rows:
        shortest = sorted_lengths[begin]
        widest = max(shortest * max_length_spread, float(shortest + min_length_slack))
        end = begin + 1
        while (
            end < rows
            and sorted_lengths[end] <= widest
            and (end - begin + 1) * sorted_lengths[end] <= max_tokens_per_forward
        ):
            end += 1
        ends.append(end)
        begin = end
    return ends


class LengthBuckets:
    """The policy's parameters, read from a classifier config's `parameters` ({key: string value});
    `prefix` "gpu_": the ones the graph applies on a GPU."""

    KEYS = ("max_length_spread", "min_length_slack", "max_tokens_per_forward")

    def __init__(self, parameters, prefix=""):
        self.max_length_spread = float(parameters[prefix + "max_length_spread"])
        self.min_length_slack = int(parameters[prefix + "min_length_slack"])
        self.max_tokens_per_forward = int(parameters[prefix + "max_tokens_per_forward"])

    def ends(self, sorted_lengths):
        return chunk_ends(
            [int(n) for n in sorted_lengths], self.max_length_spread, self.min_length_slack, self.max_tokens_per_forward
        )


def unpadded_rows(batch):
    """Every row of each (ids [n, width], mask [n, width]) request of `batch`, without its padding."""
    return [ids[r][mask[r] != 0] for ids, mask in batch for r in range(len(ids))]


def run_in_chunks(rows, forward, buckets, pad_token_id=0):
    """(logits [rows, labels], token_counts [rows, 2]) of `rows` (1-D arrays of token ids, no padding).

    The rows are sorted by length and cut into the policy's chunks; `forward(ids, mask)` runs one
    chunk padded to its longest row ([n, width] int64 each) and returns its logits. token_counts holds
    each row's real tokens and the tokens computed for it (its chunk's width).
    """
    lengths = np.array([len(row) for row in rows], dtype=np.int64)
    order = np.argsort(lengths, kind="stable")
    logits, computed = [None] * len(rows), np.zeros(len(rows), dtype=np.int64)
    begin = 0
    for end in buckets.ends(lengths[order]):
        members = order[begin:end]
        width = max(int(lengths[members[-1]]), 1)
        ids = np.full((len(members), width), pad_token_id, dtype=np.int64)
        mask = np.zeros((len(members), width), dtype=np.int64)
        for slot, row in enumerate(members):
            ids[slot, : lengths[row]] = rows[row]
            mask[slot, : lengths[row]] = 1
        for slot, row_logits in zip(members, forward(ids, mask), strict=True):
            logits[slot] = row_logits
        computed[members] = width
        begin = end
    return np.stack(logits).astype(np.float32), np.stack([lengths, computed], axis=1)
