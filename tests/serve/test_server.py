"""End to end, with the real vLLM server (started once per session by the `tiny_server` fixture):
the plugin serves a linear-RoPE x4 checkpoint through `python -m serve`, clients get answers,
limits hold, and vLLM's next-token logprobs match transformers' past the original context."""

import pytest
import requests

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(tiny_server):
    from openai import OpenAI

    return OpenAI(base_url=f"{tiny_server.base_url}/v1", api_key=tiny_server.api_key, max_retries=0)


def test_models_reports_the_extended_length(client, tiny_server):
    models = client.models.list().data
    assert [m.id for m in models] == [tiny_server.name]
    assert models[0].model_extra["max_model_len"] == tiny_server.max_model_len == 512


def test_chat_completion(client, tiny_server):
    reply = client.chat.completions.create(model=tiny_server.name, max_tokens=8, temperature=0,
                                           messages=[{"role": "user", "content": "The pass key is 42."}])
    assert reply.choices[0].finish_reason in ("length", "stop")
    assert reply.usage.completion_tokens >= 1 and reply.usage.prompt_tokens > 5
    assert isinstance(reply.choices[0].message.content, str)


def test_chat_completion_streams(client, tiny_server):
    stream = client.chat.completions.create(model=tiny_server.name, max_tokens=8, temperature=0, stream=True,
                                            stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": "Beautiful is better"}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8
    plain = client.chat.completions.create(model=tiny_server.name, max_tokens=8, temperature=0,
                                           messages=[{"role": "user", "content": "Beautiful is better"}])
    assert text == plain.choices[0].message.content  # greedy: streaming changes nothing


def test_completion(client, tiny_server):
    reply = client.completions.create(model=tiny_server.name, prompt="Simple is better than", max_tokens=5,
                                      temperature=0)
    assert reply.usage.completion_tokens == 5 and isinstance(reply.choices[0].text, str)


def test_prompt_over_the_limit_is_a_400_naming_it(client, tiny_server):
    import openai

    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model=tiny_server.name, prompt=[[5] * 600], max_tokens=1)
    assert err.value.status_code == 400 and "512" in str(err.value)


def test_malformed_request_is_a_4xx(tiny_server):
    headers = {"Authorization": f"Bearer {tiny_server.api_key}"}
    url = f"{tiny_server.base_url}/v1/chat/completions"
    no_messages = requests.post(url, json={"model": tiny_server.name}, headers=headers, timeout=30)
    assert 400 <= no_messages.status_code < 500
    too_many = requests.post(url, headers=headers, timeout=30, json={
        "model": tiny_server.name, "max_tokens": 10_000, "messages": [{"role": "user", "content": "hi"}]})
    assert too_many.status_code == 400 and "512" in too_many.text


def test_unknown_chat_role_is_a_400_naming_the_allowed_roles(tiny_server):
    """OpenAI's API refuses a role it does not know; vLLM alone would render it and answer 200."""
    headers = {"Authorization": f"Bearer {tiny_server.api_key}"}
    url = f"{tiny_server.base_url}/v1/chat/completions"
    reply = requests.post(url, headers=headers, timeout=30, json={
        "model": tiny_server.name, "max_tokens": 2, "messages": [{"role": "wizard", "content": "hi"}]})
    assert reply.status_code == 400, reply.text
    message = reply.json()["error"]["message"]
    assert "wizard" in message
    assert all(role in message for role in ("system", "user", "assistant", "tool", "developer", "function"))
    not_json = requests.post(url, headers=headers, timeout=30, data=b"{not json")
    assert 400 <= not_json.status_code < 500  # vLLM's own answer, passed through


def test_api_key_is_required(tiny_server):
    url = f"{tiny_server.base_url}/v1/models"
    assert requests.get(url, timeout=30).status_code == 401
    assert requests.get(url, headers={"Authorization": "Bearer wrong"}, timeout=30).status_code == 401


# Both sides run float32. vLLM and transformers sum in different orders (fused qkv, paged attention),
# which moves logprobs slightly; the project's machine notes report ~1e-5 on the 30-layer SmolLM2.
# 1e-4 leaves a 10x margin while a wrong RoPE (e.g. no interpolation) moves them by >1e-2.
LOGPROB_ATOL = 1e-4


def test_logprobs_match_transformers_past_the_original_context(client, tiny_server):
    import torch
    from transformers import AutoModelForCausalLM

    from tests.conftest import TINY_CONTEXT

    ids = torch.randint(3, 500, (3 * TINY_CONTEXT,), generator=torch.Generator().manual_seed(0)).tolist()
    reply = client.completions.create(model=tiny_server.name, prompt=[ids], max_tokens=1, temperature=0,
                                      logprobs=5, extra_body={"return_tokens_as_token_ids": True})
    served = {int(k.split(":")[1]): v for k, v in reply.choices[0].logprobs.top_logprobs[0].items()}

    model = AutoModelForCausalLM.from_pretrained(tiny_server.model_dir, dtype=torch.float32).eval()
    assert model.config.rope_parameters["rope_type"] == "linear"
    with torch.no_grad():
        logprobs = model(torch.tensor([ids])).logits[0, -1].log_softmax(-1)
    top = logprobs.topk(5)
    assert set(served) == set(top.indices.tolist())
    for token, value in served.items():
        assert abs(value - logprobs[token].item()) < LOGPROB_ATOL, (token, value, logprobs[token].item())
    # The check has teeth: without interpolation, transformers' answer moves far beyond the tolerance.
    model.config.rope_parameters = {"rope_type": "default", "rope_theta": 10000.0}
    plain = AutoModelForCausalLM.from_config(model.config, dtype=torch.float32).eval()
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        wrong = plain(torch.tensor([ids])).logits[0, -1].log_softmax(-1)
    assert max(abs(v - wrong[t].item()) for t, v in served.items()) > 100 * LOGPROB_ATOL
