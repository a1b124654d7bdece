"""Fixtures for unit tests: a word-level tokenizer, so tiny random models can read text without the Hub."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast


def _word_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer with BOS/EOS/PAD/UNK over ``words`` (no Hub needed)."""
    specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(specials + words))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        add_bos_token=True,
    )
    tok.init_kwargs["name_or_path"] = "word-level-test"  # TransformerLens reads it
    return tok


@pytest.fixture(scope="session")
def word_tokenizer():
    """``word_tokenizer(words)``: a word-level tokenizer over ``words``."""
    return _word_tokenizer
