"""benchmarks/retrieval.py: grading (pure), and the whole path through the real tiny vLLM server, whose
random-init answers are noise: the test checks the plumbing (exact lengths as the server counts them,
grading of what came back, records, resuming), not accuracy."""

import json

import pytest

from benchmarks import retrieval
from finetune import passkey
from finetune.eval import encoder
from finetune.model import load_tokenizer
from tests.tiny import make_tokenizer, training_text


def request(kind: str):
    if kind == "single":
        return retrieval.Request("single", 3, [1, 2], 7, passkey.Trial(8192, 1, 0.3, 4242))
    trial = passkey.MultikeyTrial(8192, 2, 0.5, ("apple", "river"), (12345, 23456), 0.1)
    return retrieval.Request("multikey", 0, [1, 2], 7, trial)


def test_grading_is_exact_and_records_the_trial():
    r = retrieval.grade(request("single"), " 4242. Remember it.")
    assert r == {"kind": "single", "index": 3, "length": 8192, "depth_bin": 1, "depth": 0.3, "key": 4242,
                 "answer": " 4242. Remember it.", "correct": True}
    assert not retrieval.grade(request("single"), " 42420")["correct"]
    m = retrieval.grade(request("multikey"), " 23456.")
    assert (m["correct"], m["distractor"], m["name"], m["distractors"]) == (False, True, "apple", {"river": 23456})
    assert retrieval.grade(request("multikey"), "12345")["correct"]


def test_accuracy_counts_per_length_and_kind():
    records = [{"kind": "single", "length": 512, "correct": True}, {"kind": "single", "length": 256, "correct": False},
               {"kind": "single", "length": 512, "correct": False},
               {"kind": "multikey", "length": 512, "correct": True}]
    assert retrieval.accuracy(records, "single") == {256: (0, 1), 512: (1, 2)}
    assert retrieval.accuracy(records, "multikey") == {512: (1, 1)}


def test_plan_is_exact_and_seeded():
    encode = encoder(make_tokenizer())
    text = encode(training_text()[0])
    r = retrieval.Retrieval(lengths=(300, 400), depth_bins=2, trials=2, multikey_trials=1, keys=3)
    requests = retrieval.plan(encode, text, r)
    assert [q.kind for q in requests] == ["single"] * 8 + ["multikey"] * 4
    assert all(len(q.ids) == q.trial.length for q in requests)
    assert [q.ids for q in requests] == [q.ids for q in retrieval.plan(encode, text, r)]


@pytest.mark.slow
def test_through_the_tiny_server(tiny_server, tmp_path):
    encode = encoder(load_tokenizer(tiny_server.model_dir))
    r = retrieval.Retrieval(lengths=(300, 480), depth_bins=2, trials=1, multikey_trials=1, keys=3)
    requests = retrieval.plan(encode, encode(training_text()[0]), r)
    out = tmp_path / "records.jsonl"
    records = retrieval.run(tiny_server.base_url, requests, out, tiny_server.api_key)
    assert len(records) == len(requests) == 8
    for q, rec in zip(requests, records):
        assert rec["prompt_tokens"] == len(q.ids) == rec["length"]  # as the server counted them
        assert (rec["kind"], rec["index"], rec["key"]) == (q.kind, q.index, q.trial.key)
        assert rec["correct"] == (passkey.first_number(rec["answer"]) == rec["key"]) and rec["seconds"] > 0
        assert 1 <= rec["answer_tokens"] <= q.max_tokens
    again = retrieval.ask(tiny_server.base_url, tiny_server.name, requests[0], tiny_server.api_key)
    assert again["answer"] == records[0]["answer"]  # greedy: the same answer twice

    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:5]) + "\n")  # as if interrupted after five answers
    resumed = retrieval.run(tiny_server.base_url, requests, out, tiny_server.api_key)
    assert [x["answer"] for x in resumed] == [x["answer"] for x in records]
    assert [json.loads(x)["index"] for x in out.read_text().splitlines()] == [json.loads(x)["index"] for x in lines]
