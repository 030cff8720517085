"""benchmarks/extend_default.py end to end on a tiny model: train, then base / base+PI / merged rows
evaluated by `finetune eval`, a report with every row, and a rerun that reuses the cached evaluations."""

import json
import subprocess
import sys

import pytest

from benchmarks import extend_default
from tests.tiny import make_tiny_checkpoint, training_text

pytestmark = pytest.mark.slow
CONTEXT, TARGET = 128, 256


def test_before_and_after_rows(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LONGCTX_HOME", str(tmp_path / "home"))
    base = make_tiny_checkpoint(tmp_path / "base", context=CONTEXT)
    data = tmp_path / "data"
    data.mkdir()
    for i, text in enumerate(training_text()):
        (data / f"doc{i}.txt").write_text(text * 6)
    run = tmp_path / "run"
    subprocess.run([sys.executable, "-m", "finetune", "train", "--model", str(base), "--target-length", str(TARGET),
                    "--data", str(data), "--out", str(run), "--max-steps", "2", "--warmup-steps", "1",
                    "--save-every", "1", "--lr", "1e-3"], check=True, capture_output=True)
    out = tmp_path / "results" / "extended.md"
    args = ["--run", str(run), "--base", str(base), "--data", str(data), "--lengths", "128", "256",
            "--max-windows", "1", "--passkey-lengths", "140", "250", "--passkey-depths", "2", "--out", str(out)]
    extend_default.main(args)

    report = json.loads(out.with_suffix(".json").read_text())
    rows = report["results"]
    assert set(rows) == {"base", "pi", "longlora"}
    assert rows["base"]["rope_override"]["rope"] is None
    assert rows["pi"]["rope_override"] == {"rope": "linear", "factor": 2.0}
    assert rows["longlora"]["rope_parameters"]["factor"] == 2.0 and rows["longlora"]["rope_length"] == TARGET
    for r in rows.values():
        assert [p["length"] for p in r["perplexity"]] == [128, 256]
        assert len([t for t in r["passkey"]["trials"] if t["length"] == 250]) == 2
    assert report["run"]["steps"] == 2 and len(report["run"]["losses"]) == 2
    text = out.read_text()
    assert "128 → 256 tokens" in text and "| LongLoRA run, merged |" in text and out.with_suffix(".png").stat().st_size

    capsys.readouterr()
    extend_default.main(args)  # nothing new to measure: every row comes from the cache
    assert capsys.readouterr().out.count("cached in") == 3
