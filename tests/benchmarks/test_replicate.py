"""The tiny base's recall drills: rows of exactly the base context, scored only on the answers, each answer
the key of the needle before it; and the loss that scores them."""

import random

import pytest
import torch

from benchmarks import replicate as R
from finetune import passkey
from finetune.model import load_tokenizer
from longctx.passkey import first_number
from tests.tiny import make_tiny_checkpoint


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return load_tokenizer(make_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), context=64))


@pytest.mark.parametrize("context", [R.CONTEXT, 4 * R.CONTEXT])
def test_drill_rows_score_only_answers_and_each_answer_is_its_needles_key(tokenizer, context, monkeypatch):
    monkeypatch.setattr(R, "CONTEXT", context)
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    pad = tokenizer.eos_token_id
    question = encode(passkey.QUESTION)
    rng = random.Random(0)
    counts, whole = [], 0
    for _ in range(20):
        ids, labels = R.passkey_drills(encode, rng, pad)
        assert len(ids) == len(labels) == R.CONTEXT
        scored = [i for i, y in enumerate(labels) if y != R.IGNORE]
        assert scored and all(labels[i] == ids[i] for i in scored)
        # each run of scored positions is an answer right after a question, naming the key of its own needle
        runs, start = [], scored[0]
        for a, b in zip(scored, scored[1:] + [None]):
            if b != a + 1:
                runs.append((start, a + 1))
                start = b
        begin = 0
        for lo, hi in runs:
            assert ids[lo - len(question):lo] == question
            key = first_number(tokenizer.decode(ids[lo:hi]))
            needle = tokenizer.decode(ids[begin:lo - len(question)])
            assert f"The pass key is {key}. Remember it. {key} is the pass key." in needle
            begin = hi
        assert all(t == pad for t in ids[begin:])  # only padding after the last answer
        counts.append(len(runs))
        whole += begin == context  # one prompt and its answer fill the row: the eval's shape
    assert min(counts) >= 1 and whole >= 5
    if context > 256:  # room for several (this toy tokenizer needs ~200 tokens a prompt): some rows pack them
        assert max(counts) >= 3


def test_next_token_loss_scores_the_next_label_and_skips_ignored():
    logits = torch.full((1, 3, 4), -30.0)
    logits[0, 0, 2] = logits[0, 1, 1] = 30.0  # position 0 predicts token 2, position 1 token 1
    labels = torch.tensor([[0, 2, 3]])  # next labels: 2 (right), 3 (wrong): the mean of 0 and 60
    assert R.next_token_loss(logits, labels).item() == pytest.approx(30.0, rel=1e-3)
    labels = torch.tensor([[0, R.IGNORE, 3]])  # only the wrong one scored
    assert R.next_token_loss(logits, labels).item() == pytest.approx(60.0, rel=1e-3)
    labels = torch.tensor([[0, 2, R.IGNORE]])
    assert R.next_token_loss(logits, labels).item() == pytest.approx(0.0, abs=1e-6)


def test_a_batch_keeps_at_least_one_text_row():
    R.Settings(passkey_drill=0.5, pretrain_batch=4)
    for share in (1.0, 0.9, -0.5):  # 0.9 of 4 rows rounds to 4: no text left
        with pytest.raises(ValueError, match="--passkey-drill"):
            R.Settings(passkey_drill=share, pretrain_batch=4)
