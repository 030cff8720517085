"""benchmarks/extend_default.py end to end on a tiny model: a trained run and the training-free rows,
perplexity by `finetune eval` and retrieval through real vLLM servers, cell by cell, a report with every
cached cell, and reruns that measure nothing twice."""

import json
import subprocess
import sys

import pytest

from benchmarks import extend_default
from tests.conftest import free_port
from tests.tiny import make_tiny_checkpoint, training_text

pytestmark = pytest.mark.slow
CONTEXT, FACTOR = 128, 4
TARGET = CONTEXT * FACTOR


def test_rows_cell_by_cell(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LONGCTX_HOME", str(tmp_path / "home"))
    base = make_tiny_checkpoint(tmp_path / "base", context=CONTEXT)
    data = tmp_path / "data"
    data.mkdir()
    for i, text in enumerate(training_text()):
        (data / f"doc{i}.txt").write_text(text * 6)
    run = tmp_path / "run"
    subprocess.run([sys.executable, "-m", "finetune", "train", "--model", str(base), "--target-length", str(TARGET),
                    "--data", str(data), "--out", str(run), "--rope", "linear", "--max-steps", "2",
                    "--warmup-steps", "1", "--save-every", "1", "--lr", "1e-3"], check=True, capture_output=True)
    out = tmp_path / "results" / "extended.md"
    common = ["--runs", str(run), "--base", str(base), "--data", str(data), "--factor", str(FACTOR),
              "--ppl-lengths", "128", str(TARGET), "--max-windows", "1", "--retrieval-lengths", "300", "480",
              "--depth-bins", "2", "--keys", "3", "--port", str(free_port()), "--kv-cache-gib", "1", "--out", str(out)]
    assert extend_default.main([*common, "--measure", "ppl"]) == 0
    assert extend_default.main([*common, "--measure", "retrieval", "--rows", "unchanged", "run"]) == 0

    report = json.loads(out.with_suffix(".json").read_text())
    rows = report["results"]
    assert list(rows) == ["unchanged", "dynamic", "yarn", "run"]  # linear only when asked for
    assert rows["yarn"]["eval_flags"] == ["--rope", "yarn", "--factor", "4"] and rows["unchanged"]["eval_flags"] == []
    for r in rows.values():
        assert sorted(r["perplexity"]) == ["128", str(TARGET)]
        assert all(p["windows"] == 1 and p["perplexity"] > 1 for p in r["perplexity"].values())
    for key in ("unchanged", "run"):
        for length in ("300", "480"):
            records = rows[key]["retrieval"][length]
            assert [x["kind"] for x in records] == ["single"] * 2 + ["multikey"] * 2
            assert all(x["prompt_tokens"] == int(length) for x in records)
            assert all(len(x["distractors"]) == 2 for x in records if x["kind"] == "multikey")
    assert rows["dynamic"]["retrieval"] == {}
    served = json.loads((tmp_path / rows["unchanged"]["served"] / "config.json").read_text())
    assert served["max_position_embeddings"] == TARGET and "longctx" not in served
    assert served["rope_parameters"] == json.loads((base / "config.json").read_text())["rope_parameters"]
    assert rows["run"]["run"]["steps"] == 2 and rows["run"]["run"]["tokens"] == 2 * 8 * TARGET  # 8 blocks a step
    text = out.read_text()
    assert "one NTK base for the whole served length" in text  # how the served dynamic RoPE is measured
    assert "128 → 512 tokens" in text and "linear + longlora (s2 attention), trained, merged (`run`)" in text
    assert "CPU flags that choose the dtype" in text and out.with_suffix(".png").stat().st_size
    assert all(d in ("bfloat16", "float32") for r in rows.values() for d in r["eval_dtype"].values())

    capsys.readouterr()
    assert extend_default.main([*common, "--rows", "unchanged", "run"]) == 0  # every cell of these rows is cached
    printed = capsys.readouterr().out
    assert "==" not in printed and "wrote" in printed
    out.unlink()
    assert extend_default.main([*common, "--rows", "dynamic", "--measure"]) == 0  # measure nothing, only report
    assert "== " not in capsys.readouterr().out and "| base + yarn ×4, no training (`yarn`) |" in out.read_text()
    measured = out.read_text().split("Invocations that measured")[1].split("\n\n")[1].splitlines()
    assert len(measured) == 3 and "--measure ppl" in measured[0] and "--measure retrieval" in measured[1]
