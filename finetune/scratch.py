"""Tokenizers from nothing, for the tests' tiny checkpoints and the replication's tiny base: a byte-level
BPE tokenizer trained on given texts, locally and in seconds; nothing is downloaded."""

from __future__ import annotations

from typing import Iterable, Sequence


def train_tokenizer(texts: Iterable[str], vocab: int, special: Sequence[str] = ("<|endoftext|>",),
                    bos: str | None = None, eos: str | None = None, pad: str | None = None,
                    chat_template: str | None = None):
    """A byte-level BPE tokenizer (GPT-2's scheme: every byte has a token, so nothing is unknown) trained on
    `texts` up to `vocab` entries, `special` tokens first. BOS, EOS and pad default to the first special."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=list(special),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    first = special[0]
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos or first, eos_token=eos or first,
                                   pad_token=pad or first, unk_token=None)
    if chat_template:
        fast.chat_template = chat_template
    return fast
