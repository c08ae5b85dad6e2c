"""Tokenized requests for the exported classifier graphs: rows of given lengths, padded to the longest."""

import torch


def request(vocab_size: int, lengths: list[int], seed: int = 0) -> dict:
    """One tokenized request: rows of these real lengths, padded to the longest."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab_size, (len(lengths), max(lengths)), generator=generator)
    mask = torch.ones_like(ids)
    for row, length in enumerate(lengths):
        mask[row, length:] = 0
    return {"input_ids": ids, "attention_mask": mask}
