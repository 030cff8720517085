"""Planning with a local tokenizer (--tokenizer, for servers without /tokenize) gives exactly the plan
the server's own /tokenize gives (real tiny vLLM server)."""

import pytest

from loadtest.plan import load_hf_tokenizer, make_plan, user_queue

CORPUS = ("Now is the winter of our discontent made glorious summer by this sun of York; and all the clouds "
          "that lour'd upon our house in the deep bosom of the ocean buried. ") * 60


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["chat", "completions"])
def test_local_tokenizer_plans_what_the_server_plans(tiny_server, scenario):
    args = dict(host=tiny_server.base_url, api_key=tiny_server.api_key, scenario=scenario, buckets=["300", "450"],
                per_bucket=2, max_tokens=8, seed=3, corpus=CORPUS)
    by_server = make_plan(**args)
    locally = make_plan(**args, tokenizer=str(tiny_server.model_dir))
    assert [p["tokens"] for p in by_server["prompts"]] == [300, 300, 450, 450]
    assert locally == by_server


def test_a_folder_without_a_tokenizer_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="--tokenizer .*not a tokenizer folder"):
        load_hf_tokenizer(str(tmp_path))


def test_user_queues_interleave_buckets_and_start_apart():
    # the plan lists each bucket's prompts together: 8 of 1k, 8 of 4k, 8 of 8k, then 2 chunk needles at 8k
    plan = [{"bucket": b, "i": i} for b in ("1k", "4k", "8k") for i in range(8)]
    plan += [{"bucket": "8k", "i": 8 + i, "kind": "chunk"} for i in range(2)]
    queues = [user_queue(plan, None, user) for user in range(4)]
    for q in queues:  # each user asks every planned prompt once a cycle
        assert sorted((p["bucket"], p["i"]) for p in q) == sorted((p["bucket"], p["i"]) for p in plan)
    order = user_queue(plan, None, 0)
    assert [p["bucket"] for p in order[:6]] == ["1k", "4k", "8k"] * 2
    assert [p["i"] for p in order if p["bucket"] == "8k"] == list(range(10))  # plan order kept in a bucket
    assert len({q[0]["bucket"] + str(q[0]["i"]) for q in queues}) == 4  # users start at different prompts
    assert [p["bucket"] for p in user_queue(plan, "4k", 3)] == ["4k"] * 8  # one bucket's role (long-vs-short)
    assert user_queue([], None, 2) == []
