"""Prompts are exactly the asked token length, with the passkey at the asked depth (local tiny tokenizer)."""

import pytest

import random

from loadtest.prompts import (ANSWER, KEY_STRADDLE, KEYS, NEEDLE, PAST_ORIGINAL, Tokenizer, build_prompt,
                              local_tokenizer, parse_bucket, place_key, plan_prompts, request_fields,
                              special_targets, spread_depths)
from tests.tiny import make_tokenizer

CORPUS = ("To be, or not to be, that is the question: Whether 'tis nobler in the mind to suffer "
          "The slings and arrows of outrageous fortune, Or to take arms against a sea of troubles. ") * 40


@pytest.fixture(scope="module")
def hf():
    return make_tokenizer()


@pytest.fixture(scope="module", params=["completions", "chat"])
def tok(request, hf) -> Tokenizer:
    return local_tokenizer(hf, request.param)


@pytest.mark.parametrize("length", [257, 400, 600])
@pytest.mark.parametrize("depth", [0.0, 0.3, 0.5, 1.0])
def test_exact_length_and_depth(tok, length, depth):
    filler = tok.encode(CORPUS)
    p = build_prompt(tok, filler, length, depth, key=31415)
    assert tok.count(p.text) == length and p.kind == "spread"
    needle = NEEDLE.format(key=31415)
    at = p.text.index(needle)
    intro_end = p.text.index("\n\n") + 2
    before = len(tok.encode(p.text[intro_end:at]))
    after = len(tok.encode(p.text[at + len(needle):p.text.rindex("\n\nWhat is")]))
    assert abs(before / (before + after) - depth) <= 2 / (before + after)
    ids = tok.render(p.text)  # key_at is where the key's tokens start in the rendered request
    assert tok.decode(ids[p.key_at:p.key_at + 8]).lstrip().startswith("31415")
    assert "31415" not in tok.decode(ids[:p.key_at])


def test_requests_end_on_the_answer_prefix(hf):
    chat = request_fields("chat", "TEXT")
    assert chat["messages"][-1] == {"role": "assistant", "content": ANSWER}
    assert chat["continue_final_message"] and not chat["add_generation_prompt"]
    rendered = hf.decode(local_tokenizer(hf, "chat").render("TEXT"))
    assert rendered.rstrip().endswith(ANSWER) and "TEXT" in rendered  # no end-of-turn after the prefix
    assert request_fields("completions", "TEXT")["prompt"].endswith("TEXT\n" + ANSWER)


@pytest.mark.parametrize("target", [150, 255, 300])
def test_place_key_puts_the_key_at_a_token(tok, target):
    p = place_key(tok, tok.encode(CORPUS), 400, target, key=27182, kind="chunk")
    assert tok.count(p.text) == 400 and p.key_at == target and p.kind == "chunk"


def test_place_key_out_of_reach(tok):
    with pytest.raises(ValueError, match="cannot put the key at token 20 "):
        place_key(tok, tok.encode(CORPUS), 400, 20, key=27182)  # inside the intro


def test_special_targets():
    # boundaries 256, 512, ... 7936 inside an 8160-token prompt; 2 of them, spread; key straddles each
    chunk = special_targets(8160, 2, chunk_tokens=256)
    assert chunk == [("chunk", 2048 - KEY_STRADDLE), ("chunk", 6144 - KEY_STRADDLE)]
    assert special_targets(8160, 1, chunk_tokens=512) == [("chunk", 4096 - KEY_STRADDLE)]
    assert special_targets(300, 1, chunk_tokens=512) == []  # no boundary inside the prompt
    past = special_targets(8160, 2, original_context=2048)
    assert past == [("past-original", 2048 + PAST_ORIGINAL)] * 2
    assert special_targets(2000, 2, original_context=2048) == []  # the prompt does not reach past it
    assert special_targets(8160, 3) == []


def test_spread_depths_fill_every_stratum():
    depths = spread_depths(5, random.Random(0))
    assert sorted(int(d * 5) for d in depths) == [0, 1, 2, 3, 4]


def test_plan_is_unique_unless_shared(tok):
    unique = plan_prompts(tok, CORPUS, ["220", "300"], per_bucket=3, seed=1)
    assert [p.tokens for p in unique] == [220] * 3 + [300] * 3
    assert all(KEYS[0] <= p.key <= KEYS[1] for p in unique)
    assert all(tok.count(p.text) == p.tokens for p in unique)
    assert len({p.text[200:260] for p in unique}) == 6  # own corpus window each
    shared = plan_prompts(tok, CORPUS, ["220"], per_bucket=3, shared_prefix=True, seed=1)
    assert len({p.text[:120] for p in shared}) == 1


def test_plan_adds_the_needles_where_servers_break(tok):
    plan = plan_prompts(tok, CORPUS, ["400", "600"], per_bucket=4, seed=2, chunk_tokens=256, original_context=400)
    special = [(p.bucket, p.kind, p.key_at) for p in plan if p.kind != "spread"]
    assert special == [("400", "chunk", 256 - KEY_STRADDLE),  # a quarter of per_bucket: one of each that fits
                       ("600", "chunk", 512 - KEY_STRADDLE), ("600", "past-original", 400 + PAST_ORIGINAL)]
    assert [p.bucket for p in plan if p.kind == "spread"] == ["400"] * 4 + ["600"] * 4
    assert all(tok.count(p.text) == p.tokens for p in plan)


def test_too_short_bucket(tok):
    with pytest.raises(ValueError, match="too short"):
        build_prompt(tok, tok.encode(CORPUS), 10, 0.5, key=7)


def test_parse_bucket():
    assert [parse_bucket(b) for b in ("1k", "8K", "300")] == [1024, 8192, 300]
    with pytest.raises(ValueError):
        parse_bucket("4kb")
