"""benchmarks/hf_server.py and benchmarks/serving_baseline.py: the pure pieces (no server is started)."""

from pathlib import Path

from benchmarks.hf_server import chat_prompt_ids, chunk, request_ids, usage
from benchmarks.serving_baseline import Settings, prefill_flops, ratios, render
from loadtest.sse import stream_metrics
from tests.tiny import make_tokenizer


def test_chat_ids_are_the_template_without_added_specials():
    tok = make_tokenizer()
    messages = [{"role": "user", "content": "The pass key is 12345."}]
    ids = chat_prompt_ids(tok, messages)
    assert tok.decode(ids) == "<|im_start|>user\nThe pass key is 12345.<|im_end|>\n<|im_start|>assistant\n"
    assert request_ids(tok, {"messages": messages, "add_generation_prompt": True}) == ids
    assert request_ids(tok, {"prompt": "The sky", "add_special_tokens": False}) == tok("The sky")["input_ids"]
    # the load tester's answer prefix: a final assistant message left open, as vLLM renders it
    prefixed = messages + [{"role": "assistant", "content": "The pass key is"}]
    body = {"messages": prefixed, "add_generation_prompt": False, "continue_final_message": True}
    assert tok.decode(request_ids(tok, body)) == (
        "<|im_start|>user\nThe pass key is 12345.<|im_end|>\n<|im_start|>assistant\nThe pass key is")


def test_loadtest_parses_the_stream():
    events = [chunk("r", "m", 0, {"role": "assistant", "content": ""}), chunk("r", "m", 0, {"content": "The "}),
              chunk("r", "m", 0, {"content": "key"}), chunk("r", "m", 0, finish="length"),
              chunk("r", "m", 0, usage=usage(4096, 2)), "data: [DONE]\n\n"]
    result = stream_metrics([(float(i), e.strip()) for i, e in enumerate(events)], start=0.0)
    assert result.text == "The key" and result.ttft == 1.0 and result.done and result.error is None
    assert (result.prompt_tokens, result.output_tokens) == (4096, 2)


def test_prefill_flops_by_hand():
    # 1 layer, d=4, 2 heads of 2 (1 kv head), MLP 8: q,o 2*4*4; k,v 2*4*2; MLP 3*4*8 -> 144 weights
    config = {"hidden_size": 4, "num_hidden_layers": 1, "intermediate_size": 8, "num_attention_heads": 2,
              "num_key_value_heads": 1}
    assert prefill_flops(config, 10) == 2 * 10 * 144 + 2 * 4 * 10**2


def test_ratios_against_the_targets():
    assert ratios({"output_tok_s": 9.0, "ttft_p50": 1.0}, {"output_tok_s": 3.0, "ttft_p50": 2.0}) == {
        "throughput": 3.0, "ttft": 0.5, "throughput_met": True, "ttft_met": True}
    missed = ratios({"output_tok_s": 1.0, "ttft_p50": None}, {"output_tok_s": 0.0, "ttft_p50": 2.0})
    assert missed == {"throughput": None, "ttft": None, "throughput_met": False, "ttft_met": False}


def test_render_names_every_server():
    run = {"startup_s": 1.0, "command": "-m loadtest", "load_before": (1.0, 1.0, 1.0), "load_after": (2.0, 2.0, 2.0),
           "requests": 2, "output_tokens": 128, "output_tok_s": 0.5, "ttft_p50": 3.0, "e2e_p50": 9.0,
           "passkey_ok": 1, "transport_failures": 0,
           "probe": {"prompt_tokens": 4096, "seconds": 10.0, "tok_s": 409.6, "gflop_s": 20.0, "share_of_matmul": 0.5}}
    args = Settings(users=4, bucket="4k", max_tokens=64, duration="3m", profiles=("latency", "throughput"),
                    probe_bucket="8160", eager=False)
    runs = {"hf-generate": run, "vllm-latency": run, "vllm-throughput": run}
    vs = {name: ratios(run, run) for name in ("vllm-latency", "vllm-throughput")}
    text = render(runs, vs, Path("m"), 40.0, "bfloat16", args)
    assert "| hf-generate |" in text and "| vllm-latency |" in text and "| vllm-throughput |" in text
    assert text.count("**1.00x**") == 4 and "50%" in text and "bfloat16 matmul" in text and "8160-token" in text


def test_ignore_eos_generates_exactly_max_tokens(tmp_path):
    """vLLM's `ignore_eos` on the HF baseline: with the token the tiny model says first made its end token,
    it stops after 1 token without the field and runs to max_tokens with it."""
    import torch

    from benchmarks.hf_server import Generator
    from tests.tiny import make_tiny_checkpoint

    gen = Generator(make_tiny_checkpoint(tmp_path / "tiny"))
    with torch.no_grad():
        first = gen.model(torch.tensor([[5, 6, 7]])).logits[0, -1].argmax().item()  # greedy's first token
    gen.model.generation_config.eos_token_id = first
    for ignore, expected in ((False, 1), (True, 8)):
        pieces, thread, out = gen.stream([5, 6, 7], 8, ignore_eos=ignore)
        list(pieces)
        thread.join()
        assert out.get("tokens") == expected, (ignore, out)


def test_the_load_tester_asks_for_ignore_eos_when_told():
    from loadtest.plan import payload

    plan = {"model": "m", "max_tokens": 8, "endpoint": "completions", "ignore_eos": True}
    assert payload(plan, {"text": "x"}, None)["ignore_eos"] is True
    assert "ignore_eos" not in payload({**plan, "ignore_eos": False}, {"text": "x"}, None)
