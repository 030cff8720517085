import errno
import json
import subprocess
import sys

import pytest

from finetune.__main__ import main, make_config, parser
from finetune.config import MergeConfig, TrainConfig


def cli(*args):
    return main([str(a) for a in args])


@pytest.fixture
def train_args(tiny_model, corpus, tmp_path):
    return ["train", "--model", tiny_model, "--data", corpus, "--out", tmp_path / "run", "--target-length", 128,
            "--attention", "full", "--max-steps", 1, "--grad-accum", 1, "--no-gradient-checkpointing"]


def test_help_comes_from_field_docstrings():
    text = parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert "context length to train for" in text and "(default: 16384)" in text
    done = subprocess.run([sys.executable, "-m", "finetune", "merge", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "run folder written by `finetune train`" in done.stdout


def test_train_then_merge(train_args, tmp_path):
    assert cli(*train_args) == 0
    assert cli("merge", tmp_path / "run", "--out", tmp_path / "merged") == 0
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert config["rope_parameters"]["factor"] == 2.0


def test_preset_first_line_and_override(tmp_path, tiny_model):
    preset = tmp_path / "p.toml"
    preset.write_text(f'#!/usr/bin/env -S finetune train --preset\nmodel = "{tiny_model}"\nmax_steps = 7\n'
                      f'data = ["a.txt", "b"]\n')
    args = vars(parser().parse_args(["train", "--preset", str(preset), "--max-steps", "3"]))
    cfg = make_config(TrainConfig, args)
    assert cfg.max_steps == 3 and cfg.model == tiny_model and cfg.data[1].name == "b"
    preset.write_text("max_steps = 7\n")
    assert cli("train", "--preset", preset) == 2


def one_line_error(capsys, after_progress=False):
    err = capsys.readouterr().err.strip()
    if after_progress:  # the progress bar was drawn on stderr before the failure
        err = err.splitlines()[-1]
    assert err.startswith("finetune: error: ") and "\n" not in err
    return err


@pytest.mark.parametrize("change, message", [
    (["--target-length", 64], "not above the model's original context 64"),
    (["--rope", "ntk"], "unknown RoPE method 'ntk'"),
    (["--target-length", 100_000], "fewer than one block"),
    (["--data", "/nonexistent"], "does not exist"),
    (["--data", "corpus:pg19"], "unknown corpus 'pg19'"),
    (["--pose-window", 128], "--pose-window must be 0 (off) or between 2 and --target-length"),
    (["--decay-steps", 1000], "--decay-steps must be from 0 (off) to --max-steps"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(train_args, tmp_path, capsys, change, message):
    assert cli(*train_args, *change) == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "run").exists()


def test_empty_data_and_bad_model(train_args, tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("")
    assert cli(*train_args, "--data", tmp_path / "empty.txt") == 2
    assert "no text" in one_line_error(capsys)
    assert cli(*train_args, "--model", tmp_path) == 2
    assert "not a model folder" in one_line_error(capsys)
    (tmp_path / "config.json").write_text('{"model_type": "gpt2", "n_positions": 1024}')  # no RoPE
    assert cli(*train_args, "--model", tmp_path) == 2
    assert "'gpt2' is not supported" in one_line_error(capsys)
    (tmp_path / "config.json").write_text('{"model_type": "gemma2", "max_position_embeddings": 4096}')
    assert cli(*train_args, "--model", tmp_path) == 2
    assert "'gemma2' is not supported (its attention soft-caps the logits" in one_line_error(capsys)


def test_resume_of_a_different_run(train_args, capsys):
    assert cli(*train_args) == 0
    capsys.readouterr()
    assert cli(*train_args, "--resume", "--lr", "0.5") == 2
    assert "different run" in one_line_error(capsys)


def test_full_disk_leaves_no_half_checkpoint(train_args, tmp_path, capsys, monkeypatch):
    import finetune.checkpoint

    save = finetune.checkpoint.torch.save

    def full(obj, path, **kw):  # the disk fills up while the checkpoint is written
        if str(path).endswith("trainer.pt"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        save(obj, path, **kw)

    monkeypatch.setattr(finetune.checkpoint.torch, "save", full)
    assert cli(*train_args) == 2
    assert "disk full" in one_line_error(capsys, after_progress=True)
    assert list((tmp_path / "run" / "checkpoints").iterdir()) == []  # the temporary folder is gone


def test_merge_preset_gives_the_run(tmp_path, capsys):
    preset = tmp_path / "m.toml"
    preset.write_text(f'#!/usr/bin/env -S finetune merge --preset\nrun = "{tmp_path / "r"}"\ntolerance = 1e-4\n')
    cfg = make_config(MergeConfig, vars(parser().parse_args(["merge", "--preset", str(preset)])))
    assert cfg.run == tmp_path / "r" and cfg.tolerance == 1e-4
    assert cli("merge") == 2
    assert "needs RUN" in one_line_error(capsys)


def test_merge_of_a_missing_run(tmp_path, capsys):
    assert cli("merge", tmp_path / "nope", "--out", tmp_path / "m") == 2
    assert "not a finetune run folder" in one_line_error(capsys)
    assert not (tmp_path / "m").exists()


def test_shipped_presets_parse_into_what_they_say():
    import tomllib
    from pathlib import Path

    presets = sorted(Path(__file__).parents[2].glob("presets/*.toml"))
    assert presets
    for preset in presets:
        command = preset.read_text().splitlines()[0].split("finetune ")[1].split()[0]
        cls = {"train": TrainConfig, "merge": MergeConfig}[command]
        cfg = make_config(cls, vars(parser().parse_args([command, "--preset", str(preset)])))
        written = tomllib.loads(preset.read_text())
        assert written, preset
        for key, value in written.items():  # every setting in the file reaches the config, typed
            got = getattr(cfg, key.replace("-", "_"))
            plain = [str(x) for x in got] if isinstance(got, tuple) else str(got) if isinstance(got, Path) else got
            assert plain == value, (preset.name, key)


def test_named_corpus_and_pose_window_from_the_command_line(train_args, home, tmp_path):
    from tests.tiny import training_text

    (home / "corpus" / "austen").mkdir(parents=True)
    (home / "corpus" / "austen" / "emma.txt").write_text(" ".join(training_text()) * 3)
    args = [*train_args, "--data", "corpus:austen", "--target-length", 256, "--pose-window", 64]
    assert cli(*args) == 0
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["settings"]["data"] == ["corpus:austen"] and run["pose"] == {"window": 64, "chunks": 2}
