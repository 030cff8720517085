"""Planning with a local tokenizer (--tokenizer, for servers without /tokenize) gives exactly the plan
the server's own /tokenize gives (real tiny vLLM server)."""

import pytest

from loadtest.plan import load_hf_tokenizer, make_plan

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
