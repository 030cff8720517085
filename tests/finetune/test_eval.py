"""`finetune eval`: perplexity of a uniform model, exact passkey prompts and scoring, the CLI end to end."""

import json
import math

import pytest
import torch

from finetune import passkey
from finetune.__main__ import main
from finetune.eval import heldout_tail, perplexity, window_starts
from finetune.model import load_tokenizer
from tests.conftest import needs_bf16


@pytest.fixture(scope="module")
def encode(tiny_model):
    tokenizer = load_tokenizer(tiny_model)
    return lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]


def test_uniform_model_has_perplexity_equal_to_vocabulary(tiny_model):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    torch.nn.init.zeros_(model.lm_head.weight)  # every logit 0: the uniform distribution
    ids = torch.randint(0, model.config.vocab_size, (300,))
    result = perplexity(model, ids, length=64, stride=32, max_windows=3)
    assert result["windows"] == 3
    assert result["perplexity"] == pytest.approx(model.config.vocab_size, rel=1e-5)


def test_windows_fit_and_are_thinned_evenly():
    assert window_starts(1000, 256, 256, 10) == [0, 256, 512]
    assert window_starts(1000, 1000, 256, 10) == [0]
    assert window_starts(100, 256, 256, 10) == []
    starts = window_starts(10_000, 256, 256, 4)
    assert starts[0] == 0 and starts[-1] == 9728 and len(starts) == 4


def test_heldout_tail_is_beyond_every_training_block():
    ids = list(range(10_000))
    tail = heldout_tail(ids, 0.02)
    assert tail == ids[9800:]
    for block in (64, 100, 1024, 4096):  # `finetune train` keeps the last ceil(2%) blocks aside
        blocks = len(ids) // block
        assert (blocks - math.ceil(0.02 * blocks)) * block <= 9800


@pytest.mark.parametrize("depth", [0.0, 0.3, 0.5, 1.0])
def test_passkey_prompt_has_its_key_at_the_asked_depth(encode, depth):
    key, length = 31415, 600
    prompt = passkey.passkey_prompt(encode, length, depth, key)
    assert len(prompt.ids) == length
    needle = encode(passkey.NEEDLE.format(key=key))
    at = next(i for i in range(length) if prompt.ids[i:i + len(needle)] == needle)
    assert at == prompt.needle_at
    task, question = len(encode(passkey.TASK)), len(encode(passkey.QUESTION))
    filler = length - task - len(needle) - question
    assert abs(at - (task + depth * filler)) <= 1
    assert prompt.ids[-question:] == encode(passkey.QUESTION)


def test_passkey_prompt_too_short_is_refused(encode):
    with pytest.raises(ValueError, match="cannot hold"):
        passkey.passkey_prompt(encode, passkey.task_tokens(encode) - 1, 0.5, 50000)


def test_passkey_scoring_is_exact():
    assert passkey.is_correct(" 4242. Remember", 4242)
    assert passkey.is_correct("4242", 4242)
    assert not passkey.is_correct(" 42420", 4242)
    assert not passkey.is_correct(" 424", 4242)
    assert not passkey.is_correct(" 1 4242", 4242)
    assert not passkey.is_correct(" the key", 4242)


def test_trials_cover_each_cell_with_depths_inside_their_bin():
    plan = passkey.plan_trials((256, 512), depth_bins=4, trials=3, seed=1)
    assert len(plan) == 2 * 4 * 3
    assert all(t.depth_bin / 4 <= t.depth < (t.depth_bin + 1) / 4 and 1 <= t.key <= 50000 for t in plan)
    assert plan == passkey.plan_trials((256, 512), depth_bins=4, trials=3, seed=1)
    grid = passkey.accuracy_grid(plan, [t.depth_bin == 0 for t in plan], (256, 512), 4)
    assert grid == [[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]


def test_eval_cli_writes_json_and_plots(tiny_model, corpus, tmp_path):
    out = tmp_path / "eval"
    args = ["eval", tiny_model, "--data", corpus, "--out", out, "--lengths", 64, 128, "--max-windows", 2,
            "--passkey-lengths", 256, "--passkey-depths", 2, "--passkey-trials", 1,
            "--rope", "linear", "--factor", 4]
    assert main([str(a) for a in args]) == 0
    result = json.loads((out / "eval.json").read_text())
    assert [r["length"] for r in result["perplexity"]] == [64, 128]
    assert all(r["windows"] == 2 and r["perplexity"] > 1 for r in result["perplexity"])
    assert result["rope_parameters"]["factor"] == 4.0 and result["rope_length"] == 256
    assert len(result["passkey"]["trials"]) == 2 and len(result["passkey"]["accuracy"][0]) == 2
    assert (out / "perplexity.png").stat().st_size > 0 and (out / "passkey.png").stat().st_size > 0


@pytest.mark.parametrize("args, message", [
    (["--rope", "linear"], "--rope and --factor together"),
    (["--lengths", 100_000], "fewer than --lengths"),
    (["--passkey-lengths", 32], "passkey prompt needs at least"),
])
def test_eval_cli_bad_input_is_one_line(tiny_model, corpus, tmp_path, capsys, args, message):
    argv = ["eval", tiny_model, "--data", corpus, "--out", tmp_path / "e", "--lengths", 64, *args]
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_eval_reads_a_merged_checkpoints_rope_without_override(tmp_path, corpus):
    from tests.tiny import make_tiny_checkpoint

    merged = make_tiny_checkpoint(tmp_path / "merged", context=64,
                                  rope={"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0})
    out = tmp_path / "eval"
    argv = ["eval", merged, "--data", corpus, "--out", out, "--lengths", 64, 256, "--max-windows", 1,
            "--passkey-trials", 0]
    assert main([str(a) for a in argv]) == 0
    result = json.loads((out / "eval.json").read_text())
    assert result["rope_length"] == 256 and result["passkey"] is None
    assert (out / "perplexity.png").is_file() and not (out / "passkey.png").exists()


def eval_json(model, corpus, out, *flags) -> dict:
    argv = ["eval", model, "--data", corpus, "--out", out, "--lengths", 64, 256, "--max-windows", 3,
            "--passkey-trials", 0, "--rope", "linear", "--factor", 4, *flags]
    assert main([str(a) for a in argv]) == 0
    return json.loads((out / "eval.json").read_text())


def test_eval_json_records_the_dtype_and_why(tiny_model, corpus, tmp_path, monkeypatch):
    from longctx.hardware import REPORTED_FLAGS

    pinned = eval_json(tiny_model, corpus, tmp_path / "pinned", "--dtype", "float32")
    assert pinned["dtype"] == "float32" and pinned["chosen_by"] == "--dtype"
    assert set(pinned["cpu_flags"]) <= set(REPORTED_FLAGS)
    monkeypatch.setenv("LONGCTX_DTYPE", "float32")
    auto = eval_json(tiny_model, corpus, tmp_path / "auto")
    assert auto["dtype"] == "float32" and auto["chosen_by"] == "LONGCTX_DTYPE"
    assert [r["perplexity"] for r in auto["perplexity"]] == [r["perplexity"] for r in pinned["perplexity"]]


# bf16 rounds weights and activations to 8 significant bits (relative error up to 2^-9 each); over the
# tiny model's 2 layers the window's mean loss moved by 0.0015-0.0094 nats (this test's own gaps, printed
# on an AVX512-BF16 CPU), so 0.05 nats (5% in perplexity) leaves a 5x margin.
BF16_LOSS_ATOL = 0.05


@needs_bf16
def test_bf16_eval_agrees_with_float32_within_bf16_rounding(tiny_model, corpus, tmp_path):
    exact = eval_json(tiny_model, corpus, tmp_path / "fp32", "--dtype", "float32")["perplexity"]
    rounded = eval_json(tiny_model, corpus, tmp_path / "bf16", "--dtype", "bfloat16")["perplexity"]
    gaps = [abs(a - b) for x, y in zip(exact, rounded) for a, b in zip(x["window_losses"], y["window_losses"])]
    assert 0 < max(gaps) <= BF16_LOSS_ATOL, gaps  # > 0: the bf16 path really ran in bf16


# ---------------------------------------------------------------- eval runs the RoPE the server runs


def rotary(model, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (n, head_dim / 2) of the model's rotary embedding over a sequence of n tokens."""
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    with torch.no_grad():
        cos, sin = model.model.rotary_emb(torch.zeros(1, n, head_dim), torch.arange(n)[None])
    return cos[0, :, :head_dim // 2], sin[0, :, :head_dim // 2]


def served_rotary(config: dict, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (n, head_dim / 2) of vLLM's own rotary embedding, built from the plugin-prepared config."""
    from transformers import LlamaConfig
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.model_executor.layers.rotary_embedding import get_rope

    from plugin.models import prepare_rope

    hf = LlamaConfig(**config)
    prepare_rope(hf)
    head_dim = hf.hidden_size // hf.num_attention_heads
    with set_current_vllm_config(VllmConfig()):
        rope = get_rope(head_dim, max_position=hf.max_position_embeddings, rope_parameters=hf.rope_parameters,
                        dtype=torch.float32)
    cache = rope.cos_sin_cache[:n]  # (n, head_dim): cos halves then sin halves
    return cache[:, :head_dim // 2], cache[:, head_dim // 2:]


@pytest.fixture(scope="module")
def dynamic_checkpoint(tmp_path_factory):
    """A checkpoint as `finetune merge` writes one for dynamic NTK x4 over the tiny model's context."""
    from longctx.default_model import mark_as_longctx
    from tests.finetune.conftest import CONTEXT
    from tests.tiny import make_tiny_checkpoint

    out = make_tiny_checkpoint(tmp_path_factory.mktemp("dyn") / "dynamic-x4", context=CONTEXT,
                               rope={"rope_type": "dynamic", "factor": 4.0, "rope_theta": 10000.0})
    mark_as_longctx(out, original=CONTEXT, trained=4 * CONTEXT, method="dynamic", factor=4.0)
    return out


LENGTHS = (16, 64, 100, 256)  # below, at, above the original context (64), and the served length


@pytest.mark.parametrize("source", ["override", "merged"])
def test_eval_dynamic_rope_is_the_served_one_at_every_length(tiny_model, dynamic_checkpoint, source):
    """vLLM builds dynamic NTK once, with the base for the whole served length, for every position;
    `finetune eval` must measure that model at every length, not transformers' per-length one."""
    from finetune.eval import load_model
    from finetune.model import read_config
    from longctx.rope import extend_config

    if source == "override":  # finetune eval BASE --rope dynamic --factor 4 / python -m serve the same
        model = load_model(tiny_model, "dynamic", 4.0, torch.device("cpu"))
        config = extend_config(read_config(tiny_model), "dynamic", 256)
    else:
        model = load_model(dynamic_checkpoint, None, None, torch.device("cpu"))
        config = read_config(dynamic_checkpoint)
    for n in LENGTHS:
        for ours, served in zip(rotary(model, n), served_rotary(config, n)):
            torch.testing.assert_close(ours, served, rtol=1e-5, atol=1e-5)


def test_transformers_per_length_dynamic_differs_from_the_served_rope(dynamic_checkpoint):
    """The test above has teeth: transformers' own dynamic NTK agrees with the server only at the full
    served length and moves the angles far beyond the tolerance at every shorter one."""
    from transformers import AutoModelForCausalLM

    from finetune.model import read_config

    per_length = AutoModelForCausalLM.from_pretrained(dynamic_checkpoint, dtype=torch.float32)
    assert per_length.config.rope_parameters["rope_type"] == "dynamic"
    config = read_config(dynamic_checkpoint)
    for n in LENGTHS:
        (cos, _), (served, _) = rotary(per_length, n), served_rotary(config, n)
        gap = (cos - served).abs().max().item()
        assert gap < 1e-5 if n == 256 else gap > 1e-2, (n, gap)


def test_eval_cli_multikey_in_json_and_plot(tiny_model, corpus, tmp_path):
    out = tmp_path / "eval"
    args = ["eval", tiny_model, "--data", corpus, "--out", out, "--lengths", 64, "--max-windows", 1,
            "--passkey-lengths", 300, 400, "--passkey-depths", 2, "--passkey-trials", 0,
            "--multikey-trials", 1, "--multikey-keys", 3]
    assert main([str(a) for a in args]) == 0
    result = json.loads((out / "eval.json").read_text())
    keys = result["multikey"]
    assert result["passkey"] is None and keys["keys_per_prompt"] == 3 and keys["lengths"] == [300, 400]
    assert len(keys["trials"]) == 4 and len(keys["accuracy"]) == 2 and len(keys["accuracy"][0]) == 2
    for t in keys["trials"]:
        assert len(t["distractors"]) == 2 and t["key"] not in t["distractors"].values()
        assert t["correct"] == (passkey.first_number(t["answer"]) == t["key"])
    assert (out / "multikey.png").stat().st_size > 0 and not (out / "passkey.png").exists()


def test_eval_cli_multikey_too_short_is_one_line(tiny_model, corpus, tmp_path, capsys):
    argv = ["eval", tiny_model, "--data", corpus, "--out", tmp_path / "e", "--lengths", 64, "--passkey-trials", 0,
            "--multikey-trials", 1, "--passkey-lengths", 100]
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert "multi-key prompt with 4 keys needs at least" in err and len(err.strip().splitlines()) == 1
