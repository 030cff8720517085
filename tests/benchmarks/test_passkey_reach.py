import json

import pytest

from benchmarks.passkey_reach import Settings, prompts
from longctx.cli import UsageError


def plan_file(tmp_path):
    plan = {"endpoint": "chat", "model": "as-planned", "max_tokens": 8, "cache_salt": True, "prompts": [
        {"bucket": b, "kind": k, "text": f"{b}-{k}-{i}", "tokens": 10, "key": 12345, "depth": 0.5, "key_at": 3}
        for b in ("4k", "12k") for k in ("spread", "chunk", "past-original") for i in range(2)]}
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    return path


def test_a_plans_prompts_of_the_bucket_and_kinds_with_the_served_model_name(tmp_path):
    args = Settings(host="h", plan=plan_file(tmp_path), bucket="12k", kinds=("chunk", "past-original"), trials=3)
    pairs = prompts(args, hf=None, model="served-name")
    assert [p["text"] for _, p in pairs] == ["12k-chunk-0", "12k-chunk-1", "12k-past-original-0"]  # --trials caps
    assert {plan["model"] for plan, _ in pairs} == {"served-name"}
    assert {plan["endpoint"] for plan, _ in pairs} == {"chat"}


def test_bad_input_is_refused_in_one_line(tmp_path):
    with pytest.raises(UsageError, match="no chunk prompts in bucket 8k"):
        prompts(Settings(host="h", plan=plan_file(tmp_path), bucket="8k", kinds=("chunk",)), hf=None, model="m")
    with pytest.raises(UsageError, match="--rope and --factor together"):
        Settings(host="h", rope="dynamic")


def test_only_the_two_endpoints_are_taken():
    from longctx import cli

    with pytest.raises((UsageError, SystemExit)):
        cli.parse(Settings, ["--host", "h", "--endpoints", "soak"], "passkey_reach", "")
