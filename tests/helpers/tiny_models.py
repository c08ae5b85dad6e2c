"""Tiny randomly initialised classifiers of the four families of the model card's table.

Each gets a small tokenizer trained on the fly with `tokenizers`, so the tests
need neither the Hub nor large downloads.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    AlbertConfig,
    AutoModelForSequenceClassification,
    BertConfig,
    DistilBertConfig,
    PreTrainedTokenizerFast,
    RobertaConfig,
)

FAMILIES = ("distilbert", "bert", "roberta", "albert")
VOCAB_SIZE = 800
MAX_POSITIONS = 160  # above the default max_length of 128 (+2 for RoBERTa's offset)


def _wordpiece(texts: list[str]) -> tuple[Tokenizer, dict]:
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=VOCAB_SIZE, special_tokens=special))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    names = {
        "pad_token": "[PAD]",
        "unk_token": "[UNK]",
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "mask_token": "[MASK]",
    }
    return tok, names


def _byte_level_bpe(texts: list[str]) -> tuple[Tokenizer, dict]:
    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=VOCAB_SIZE, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    tok.post_processor = processors.RobertaProcessing(
        ("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>"))
    )
    names = {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "mask_token": "<mask>",
        "cls_token": "<s>",
        "sep_token": "</s>",
    }
    return tok, names


def _unigram(texts: list[str]) -> tuple[Tokenizer, dict]:
    special = ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(
        texts, trainers.UnigramTrainer(vocab_size=VOCAB_SIZE, special_tokens=special, unk_token="<unk>")
    )
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    names = {
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "mask_token": "[MASK]",
    }
    return tok, names


def make_tiny_base(family: str, texts: list[str], directory: Path, num_labels: int = 2) -> Path:
    """Writes a tiny pretrained-style model directory (config, weights, tokenizer) and returns it."""
    tokenizer, names = {"roberta": _byte_level_bpe, "albert": _unigram}.get(family, _wordpiece)(texts)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, **names)
    small = {"num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64, "hidden_size": 32}
    common = {
        "vocab_size": tokenizer.get_vocab_size(),
        "max_position_embeddings": MAX_POSITIONS,
        "num_labels": num_labels,
        "pad_token_id": fast.pad_token_id,
    }
    config = {
        "distilbert": lambda: DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, **common),
        "bert": lambda: BertConfig(**small, **common),
        "roberta": lambda: RobertaConfig(**small, **{**common, "max_position_embeddings": MAX_POSITIONS + 2}),
        "albert": lambda: AlbertConfig(embedding_size=16, **small, **common),
    }[family]()
    model = AutoModelForSequenceClassification.from_config(config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory
