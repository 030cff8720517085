"""Retrieval drills: the sample a drill makes, which micro-batches drill, and that training scores only answers."""

import random
import re

import pytest
import torch
from transformers import AutoTokenizer

from finetune import drills, pose, s2attn
from finetune.config import TrainConfig, UsageError
from finetune.data import IGNORE, Stream
from finetune.drills import Drills
from finetune.loss import causal_lm_loss
from finetune.model import load_extended
from finetune.passkey import NAMES as EVAL_NAMES
from finetune.train import train
from tests.finetune.test_train import final_weights, metrics, quiet, run_cfg


def test_a_drill_overwrites_the_spots_and_scores_only_the_answer():
    ids = torch.arange(100, 120)  # (20,)
    out = drills.drill(ids, [[1, 2], [3]], [2, 9], question=[7, 7, 7], answer=[8, 9])
    assert out["input_ids"].tolist() == [100, 101, 1, 2, 104, 105, 106, 107, 108, 3, 110, 111, 112, 113, 114,
                                         7, 7, 7, 8, 9]
    assert out["labels"].tolist() == [IGNORE] * 18 + [8, 9]
    assert ids.tolist() == list(range(100, 120))  # the text sample itself is left alone
    for notes, spots in (([[1, 2], [3]], [2, 3]), ([[1, 2]], [14]), ([[1]], [-1])):
        with pytest.raises(ValueError, match="overlap"):
            drills.drill(ids, notes, spots, [7, 7, 7], [8, 9])


def test_spread_places_pieces_apart_in_order_and_reaches_both_ends():
    rng = random.Random(0)
    firsts, lasts = set(), set()
    for _ in range(2000):
        lengths = [rng.randint(1, 5) for _ in range(rng.randint(1, 4))]
        starts = drills.spread(30, lengths, rng)
        ends = [s + n for s, n in zip(starts, lengths)]
        assert starts[0] >= 0 and ends[-1] <= 30 and all(e <= s for e, s in zip(ends, starts[1:]))
        firsts.add(starts[0]), lasts.add(ends[-1])
    assert 0 in firsts and 30 in lasts
    with pytest.raises(ValueError, match="do not fit"):
        drills.spread(5, [3, 3], rng)


@pytest.fixture(scope="module")
def encode(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    return lambda text: tokenizer(text, add_special_tokens=False)["input_ids"], tokenizer


def test_a_drill_asks_for_one_of_its_notes_and_answers_with_that_notes_key(encode):
    encode, tokenizer = encode
    text = {"input_ids": torch.tensor(encode("The quick brown fox jumps over the lazy dog. " * 40)[:400])}
    text["labels"] = text["input_ids"]
    make = Drills(encode, 0.5, seed=3, window=300, target=1200)
    counts, skips = set(), []
    for m in range(40):
        out = make(m, 0, text)
        assert {k: v.shape for k, v in out.items()} == {k: (300,) for k in ("input_ids", "labels", "position_ids")}
        prompt = tokenizer.decode(out["input_ids"][out["labels"] == IGNORE])
        answer = tokenizer.decode(out["labels"][out["labels"] != IGNORE])
        notes = dict(re.findall(r"Note: the number for (\w+) is (\d+)\.", prompt))
        asked = re.search(r"what is the number for (\w+)\? Answer: the number for \1 is$", prompt)[1]
        assert answer == f" {notes[asked]}." and len(set(notes.values())) == len(notes)
        assert prompt.count("Note:") == len(notes) and not {n.lower() for n in notes} & set(EVAL_NAMES)
        counts.add(len(notes))
        positions = out["position_ids"]
        assert (positions.diff() > 0).all() and positions[0] == 0 and positions[-1] < 1200
        skips.append(int(positions[-1]) - 299)
        assert all(torch.equal(v, make(m, 0, text)[k]) for k, v in out.items())  # a pure function of (seed, m, row)
    assert counts == set(range(1, drills.MAX_KEYS + 1)) and max(skips) > 600  # distances far beyond the window
    assert not {n.lower() for n in drills.NAMES} & set(EVAL_NAMES)  # names the evaluation never asks for
    assert not torch.equal(make(0, 0, text)["input_ids"], make(0, 1, text)["input_ids"])  # rows differ
    assert torch.equal(Drills(encode, 0.5, 3, 400, 400)(0, 0, text)["position_ids"], torch.arange(400))
    with pytest.raises(ValueError, match="takes 500 tokens"):
        Drills(encode, 0.5, 3, 500, 1200)(0, 0, text)


def test_the_share_of_drill_micro_batches(encode):
    chosen = [Drills(encode[0], 0.25, 0, 300, 300).chosen(m) for m in range(4000)]
    assert 0.22 < sum(chosen) / len(chosen) < 0.28
    assert chosen != [Drills(encode[0], 0.25, 1, 300, 300).chosen(m) for m in range(4000)]
    assert not any(Drills(encode[0], 0.0, 0, 300, 300).chosen(m) for m in range(100))


def test_the_stream_drills_whole_micro_batches_alike_resumed_and_split_over_ranks(encode):
    text = encode[0]("The quick brown fox jumps over the lazy dog. " * 40)
    samples = [{"input_ids": torch.tensor(text[i:i + 300]), "labels": torch.tensor(text[i:i + 300])} for i in range(6)]
    made = lambda **kw: Stream(samples, 2, 7, 0, drills=Drills(encode[0], 0.5, 7, 150, 1200), **kw)  # noqa: E731
    whole = made(positions=pose.sampler(300, 1200, 7))
    flags, batches = zip(*[(whole.drilling(), whole.next()) for _ in range(12)])
    assert 2 <= sum(flags) <= 10
    for flag, batch in zip(flags, batches):
        scored = (batch["labels"] != IGNORE).sum(dim=1)  # (2,)
        assert (scored < 10).all() if flag else (scored == 300).all()
        assert batch["position_ids"].shape == (2, 150 if flag else 300) and batch["position_ids"].max() < 1200
    resumed = made(positions=pose.sampler(300, 1200, 7))
    resumed.load_state_dict({"consumed": 8})
    assert resumed.drilling() == flags[4] and all(torch.equal(v, batches[4][k]) for k, v in resumed.next().items())
    ranks = [Stream(samples, 1, 7, 0, rank=r, world=2, drills=Drills(encode[0], 0.5, 7, 150, 1200)) for r in (0, 1)]
    for flag, batch in zip(flags, batches):
        assert all(s.drilling() == flag for s in ranks)
        assert torch.equal(torch.cat([s.next()["input_ids"] for s in ranks]), batch["input_ids"])


def test_a_drill_batch_s_loss_is_the_cross_entropy_of_its_answer(tiny_model, encode):
    model = load_extended(tiny_model, "linear", 256).float()
    ids = torch.tensor(encode[0]("The quick brown fox jumps over the lazy dog. " * 30)[:200])
    sample = Drills(encode[0], 0.5, 0, 200, 200)(0, 0, {"input_ids": ids, "labels": ids})
    batch = {k: v[None] for k, v in sample.items()} | {"attention_mask": torch.ones(1, 200, dtype=torch.int64)}
    logits = model(input_ids=batch["input_ids"]).logits[0].float()  # (200, V)
    n = int((sample["labels"] != IGNORE).sum())
    by_hand = torch.nn.functional.cross_entropy(logits[-n - 1:-1], sample["input_ids"][-n:])
    for chunk in (0, 16):
        loss = causal_lm_loss(model, batch, chunk, model.get_output_embeddings())
        torch.testing.assert_close(loss, by_hand, rtol=1e-5, atol=1e-5)


def test_a_drilled_run_drills_under_full_attention_logs_drill_losses_and_resumes_bit_exactly(
        tiny_model, corpus, tmp_path, monkeypatch):
    sparse = []  # sequence lengths S²-Attn ran on
    real = s2attn.s2_attention
    monkeypatch.setattr(s2attn, "s2_attention", lambda q, *a, **kw: sparse.append(q.shape[2]) or real(q, *a, **kw))
    common = dict(target_length=256, pose_window=200, drills=0.5, drill_window=128, attention="s2", grad_accum=2,
                  save_every=2, warmup_steps=1, gradient_checkpointing=True)
    straight = train(run_cfg(tiny_model, corpus, tmp_path / "a", max_steps=4, **common), log=quiet)
    assert 200 in sparse and 128 not in sparse  # text windows under S², drills (128 tokens) under full attention
    rows = metrics(straight)
    expected = [sum(Drills(None, 0.5, 42, 128, 256).chosen(2 * s + i) for i in range(2))  # 2 micro-batches a step
                for s in range(4)]
    assert [r.get("drills", 0) for r in rows] == expected and 0 < sum(expected) < 8
    assert all(r["drill_loss"] > 0 for r in rows if "drills" in r)
    cut = train(run_cfg(tiny_model, corpus, tmp_path / "b", max_steps=2, **common), log=quiet)
    train(run_cfg(tiny_model, corpus, cut, max_steps=4, resume=True, **common), log=quiet)
    assert metrics(cut) == [{**r, "seconds": c["seconds"], "tokens_per_s": c["tokens_per_s"]}
                            for r, c in zip(rows, metrics(cut))]
    a, b = final_weights(straight), final_weights(cut)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_drill_settings_are_refused(tmp_path):
    for bad in (dict(drills=1.0), dict(drills=-0.1), dict(drills=0.2, sft=tmp_path / "x.json")):
        with pytest.raises(UsageError, match="drills"):
            TrainConfig(**bad)
