"""Prompts are exactly the asked token length, with the passkey at the asked depth (local tiny tokenizer)."""

import pytest

from loadtest.prompts import (NEEDLE, Tokenizer, build_prompt, local_tokenizer, parse_bucket, passkey_answer,
                              plan_prompts)
from tests.tiny import make_tokenizer

CORPUS = ("To be, or not to be, that is the question: Whether 'tis nobler in the mind to suffer "
          "The slings and arrows of outrageous fortune, Or to take arms against a sea of troubles. ") * 40


@pytest.fixture(scope="module")
def hf():
    return make_tokenizer()


@pytest.fixture(scope="module", params=["completions", "chat"])
def tok(request, hf) -> Tokenizer:
    return local_tokenizer(hf, request.param)


@pytest.mark.parametrize("length", [160, 257, 600])
@pytest.mark.parametrize("depth", [0.0, 0.3, 0.5, 1.0])
def test_exact_length_and_depth(tok, length, depth):
    filler = tok.encode(CORPUS)
    p = build_prompt(tok, filler, length, depth, key=31415)
    assert tok.count(p.text) == length
    needle = NEEDLE.format(key=31415)
    at = p.text.index(needle)
    intro_end = p.text.index("\n\n") + 2
    before = len(tok.encode(p.text[intro_end:at]))
    after = len(tok.encode(p.text[at + len(needle):p.text.rindex("\n\nWhat is")]))
    assert abs(before / (before + after) - depth) <= 2 / (before + after)


def test_plan_is_unique_unless_shared(tok):
    unique = plan_prompts(tok, CORPUS, ["220", "300"], per_bucket=3, seed=1)
    assert [p.tokens for p in unique] == [220] * 3 + [300] * 3
    assert all(tok.count(p.text) == p.tokens for p in unique)
    assert len({p.text[200:260] for p in unique}) == 6  # own corpus window each
    shared = plan_prompts(tok, CORPUS, ["220"], per_bucket=3, shared_prefix=True, seed=1)
    assert len({p.text[:120] for p in shared}) == 1


def test_too_short_bucket(tok):
    with pytest.raises(ValueError, match="too short"):
        build_prompt(tok, tok.encode(CORPUS), 10, 0.5, key=7)


def test_parse_bucket_and_answer():
    assert [parse_bucket(b) for b in ("1k", "8K", "300")] == [1024, 8192, 300]
    with pytest.raises(ValueError):
        parse_bucket("4kb")
    assert passkey_answer(" 31415. Remember") == 31415
    assert passkey_answer("no idea") is None
