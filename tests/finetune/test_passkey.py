"""The multi-key needle: exact lengths, every needle where its depth says, the question naming the first,
exact grading that tells a distractor's key from a wrong number."""

import dataclasses

import pytest

from finetune import passkey
from finetune.model import load_tokenizer
from tests.tiny import training_text


@pytest.fixture(scope="module")
def encode(tiny_model):
    tokenizer = load_tokenizer(tiny_model)
    return lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.fixture(scope="module")
def text(encode):
    return encode(training_text()[0])


@pytest.mark.parametrize("length, n_keys", [(400, 2), (700, 4), (3000, 6)])
def test_multikey_prompt_is_exact_with_every_needle_at_its_depth(encode, text, length, n_keys):
    for trial in passkey.plan_multikey_trials((length,), depth_bins=3, trials=2, n_keys=n_keys, seed=5):
        prompt = passkey.multikey_prompt(encode, text, trial)
        assert len(prompt.ids) == length
        needles = [encode(passkey.MULTI_NEEDLE.format(name=n, key=k)) for n, k in zip(trial.names, trial.keys)]
        task = len(encode(passkey.MULTI_TASK))
        question = encode(passkey.MULTI_QUESTION.format(name=trial.names[0]))
        n_filler = length - task - sum(map(len, needles)) - len(question)
        for needle, at, depth in zip(needles, prompt.needles_at, prompt.depths):
            assert prompt.ids[at:at + len(needle)] == needle
            before = sum(len(n) for n, a in zip(needles, prompt.needles_at) if a < at)
            assert abs(at - task - before - depth * n_filler) <= 1  # filler tokens before it = depth share
        assert prompt.depths[0] == trial.depth and prompt.ids[-len(question):] == question
        assert len(set(trial.keys)) == n_keys and len(set(trial.names)) == n_keys


def test_distractors_spread_evenly():
    assert passkey.needle_depths(0.1, 5) == [0.1, 0.125, 0.375, 0.625, 0.875]
    assert passkey.needle_depths(0.9, 2) == [0.9, 0.5]


def test_haystack_is_real_text_from_its_offset_and_wraps():
    assert passkey.haystack([1, 2, 3], 1, 7) == [2, 3, 1, 2, 3, 1, 2]
    assert passkey.haystack([1, 2, 3], 4, 2) == [2, 3]
    with pytest.raises(ValueError, match="empty"):
        passkey.haystack([], 0, 2)


def test_multikey_prompt_too_short_is_refused(encode, text):
    shortest = passkey.multikey_task_tokens(encode, 4)
    for trial in passkey.plan_multikey_trials((shortest,), 1, 20, 4, seed=0):  # any names fit the bound
        assert len(passkey.multikey_prompt(encode, text, trial).ids) == shortest
    trial = passkey.plan_multikey_trials((shortest,), 1, 1, 4, seed=0)[0]
    needed = len(encode(passkey.MULTI_TASK)) + len(encode(passkey.MULTI_QUESTION.format(name=trial.names[0]))) + sum(
        len(encode(passkey.MULTI_NEEDLE.format(name=n, key=k))) for n, k in zip(trial.names, trial.keys))
    assert len(passkey.multikey_prompt(encode, text, dataclasses.replace(trial, length=needed)).ids) == needed
    with pytest.raises(ValueError, match="cannot hold"):
        passkey.multikey_prompt(encode, text, dataclasses.replace(trial, length=needed - 1))


def test_multikey_plan_is_seeded_with_five_digit_keys_and_depths_in_their_bins():
    plan = passkey.plan_multikey_trials((256, 512), depth_bins=4, trials=3, n_keys=3, seed=1)
    assert len(plan) == 2 * 4 * 3 and plan == passkey.plan_multikey_trials((256, 512), 4, 3, 3, seed=1)
    assert all(t.depth_bin / 4 <= t.depth < (t.depth_bin + 1) / 4 for t in plan)
    assert all(10000 <= k <= 99999 for t in plan for k in t.keys) and all(0 <= t.offset < 1 for t in plan)
    assert len({t.names for t in plan}) > 1
    with pytest.raises(ValueError, match="2 to"):
        passkey.plan_multikey_trials((256,), 1, 1, 1, seed=0)


def test_multikey_grading_is_exact_and_names_a_distractor():
    trial = passkey.MultikeyTrial(512, 0, 0.2, ("apple", "river", "lemon"), (12345, 23456, 34567), 0.0)
    assert passkey.grade_multikey(" 12345. Remember", trial) == {"correct": True, "distractor": False}
    assert passkey.grade_multikey(" 23456.", trial) == {"correct": False, "distractor": True}
    assert passkey.grade_multikey(" 123456", trial) == {"correct": False, "distractor": False}
    assert passkey.grade_multikey(" 1234", trial) == {"correct": False, "distractor": False}
    assert passkey.grade_multikey(" the apple", trial) == {"correct": False, "distractor": False}
