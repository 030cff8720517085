"""The PoSE step-time benchmark's command and results table (the measurement itself runs the real trainer)."""

from pathlib import Path

from benchmarks.pose_step_time import report, train_args
from finetune.__main__ import make_config, parser
from finetune.config import TrainConfig


def test_each_row_is_a_valid_two_step_pose_command():
    args = train_args(Path("/tmp/x"), 4096, "yarn", "corpus:mix")
    cfg = make_config(TrainConfig, vars(parser().parse_args(args)))
    assert (cfg.pose_window, cfg.target_length, cfg.rope, cfg.attention) == (4096, 32768, "yarn", "s2")
    assert (cfg.max_steps, cfg.grad_accum, cfg.precision, cfg.eval_fraction) == (2, 1, "auto", 0)


def test_report_has_one_row_per_measurement_with_its_load_and_command():
    row = {"window": 8192, "rope": "linear", "precision": "bf16", "cold_s": 300.04, "warm_s": 280.55,
           "warm_tokens_per_s": 29.2, "wall_s": 650.0, "peak_rss_mib": 6000.4, "load_before": (9.5, 1, 1),
           "load_after": (12.25, 1, 1), "command": "python -m finetune train --pose-window 8192"}
    text = report([row], "- date: today")
    assert "| 8192 | linear | bf16 | 300.0 | 280.6 | 29 | 650 | 6000 | 9.5 / 12.2 |" in text
    assert "- `python -m finetune train --pose-window 8192`" in text and text.startswith("# PoSE step time")
