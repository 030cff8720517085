"""benchmarks/extend_default.py end to end on a tiny model: a trained run and the training-free rows,
perplexity by `finetune eval` and retrieval through real vLLM servers, cell by cell, a report with every
cached cell, and reruns that measure nothing twice."""

import dataclasses
import json
import subprocess
import sys

import pytest

from benchmarks import extend_default
from tests.conftest import free_port
from tests.tiny import make_tiny_checkpoint, training_text

CONTEXT, FACTOR = 128, 4
TARGET = CONTEXT * FACTOR


@pytest.mark.slow
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


def cell_row(ppl: dict[int, float], retrieval: dict[int, list] | None = None, **extra) -> dict:
    return {"label": "a row", "perplexity": {n: {"perplexity": p} for n, p in ppl.items()},
            "eval_seconds": {n: 1.0 for n in ppl}, "eval_dtype": {n: "float32" for n in ppl},
            "retrieval": retrieval or {}, **extra}


def written(s, out, results: dict, invocations: list[str] | None = None) -> None:
    """A results file as `report` writes it (JSON turns the lengths into strings)."""
    data = {"settings": dataclasses.asdict(s), "results": results}
    if invocations is not None:
        data["invocations"] = invocations
    out.with_suffix(".json").write_text(json.dumps(data, default=str))


def reported(tmp_path):
    """Settings whose report needs only a base's config.json, and where that report goes."""
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"max_position_embeddings": CONTEXT}))
    s = extend_default.Settings(base=base, factor=FACTOR, ppl_lengths=(128, 512), retrieval_lengths=(300,))
    return s, tmp_path / "extended.md"


def test_cells_of_the_results_file_stay_and_cells_measured_here_replace_them(tmp_path):
    s, out = reported(tmp_path)
    run = {"steps": 3, "tokens": 3e6, "train_hours": 1.5, "dtype": "bfloat16", "settings": {"lr": 5e-5}}
    answer = {"kind": "single", "index": 0, "correct": True, "seconds": 2.0, "depth": 0.5, "key": 7, "answer": "7."}
    elsewhere = {"dynamic": cell_row({128: 40.0}, {300: [answer]}), "run": cell_row({512: 30.0}, run=run)}
    written(s, out, elsewhere, ["- an invocation elsewhere"])

    here = {"dynamic": cell_row({128: 41.0, 512: 45.0}), "yarn": cell_row({128: 50.0})}
    extend_default.report(s, here, out, ["extend_default.py"], [], extend_default.carried(s, out))

    rows = json.loads(out.with_suffix(".json").read_text())["results"]
    assert list(rows) == ["dynamic", "yarn", "run"]  # rows measured here first, then the carried ones
    assert {n: p["perplexity"] for n, p in rows["dynamic"]["perplexity"].items()} == {"128": 41.0, "512": 45.0}
    assert rows["dynamic"]["retrieval"]["300"] == [answer]  # not measured here: carried
    assert rows["run"]["run"] == run and rows["run"]["perplexity"]["512"]["perplexity"] == 30.0
    text = out.read_text()
    assert "- an invocation elsewhere" in text
    assert "- `dynamic` ppl @128: 40.00 in the results file before, 41.00 measured here (float32 both times)" in text
    assert "| a row (`run`) | — | 30.00 | — | — | 3 steps, 3.00 M tokens, 1.50 h, lr 5e-05, bfloat16 |" in text

    # carried again by the next report: nothing is lost or counted twice
    extend_default.report(s, {}, out, ["extend_default.py"], [], extend_default.carried(s, out))
    again = json.loads(out.with_suffix(".json").read_text())
    assert again["results"] == rows and again["invocations"] == ["- an invocation elsewhere"]


def test_cells_of_another_checkpoint_of_the_same_name_are_not_mixed_in(tmp_path):
    s, out = reported(tmp_path)
    run = {"settings": {"lr": 5e-5}, "losses": [3.0, 2.9], "steps": 2, "tokens": 2e6, "train_hours": 1.0,
           "dtype": "bfloat16"}
    written(s, out, {"run": cell_row({128: 40.0, 512: 30.0}, run=run)}, [])
    # the same run, trained again on a slower machine, in another folder, resumed once, by a finetune that has
    # a setting more (at its default): kept
    again = {**run, "train_hours": 2.0, "settings": {"lr": 5e-5, "out": "/elsewhere", "resume": True,
                                                     "save_every": 5, "drills": 0.0}}
    retrained = {**run, "settings": {"lr": 1e-4}, "losses": [3.0, 2.5]}  # another run of the same name

    extend_default.report(s, {"run": cell_row({128: 41.0}, run=again)}, out, ["x"], [], extend_default.carried(s, out))
    rows = json.loads(out.with_suffix(".json").read_text())["results"]
    assert {n: p["perplexity"] for n, p in rows["run"]["perplexity"].items()} == {"128": 41.0, "512": 30.0}

    extend_default.report(s, {"run": cell_row({128: 39.0}, run=retrained)}, out, ["x"], [],
                          extend_default.carried(s, out))
    rows = json.loads(out.with_suffix(".json").read_text())["results"]
    assert {n: p["perplexity"] for n, p in rows["run"]["perplexity"].items()} == {"128": 39.0}
    assert "`run`: the results file's cells were of another checkpoint" in out.read_text()


def test_cells_measured_under_other_settings_are_not_kept(tmp_path, capsys):
    s = extend_default.Settings(base=tmp_path, factor=FACTOR)
    out = tmp_path / "extended.md"
    written(s, out, {"dynamic": cell_row({128: 40.0})}, [])
    assert extend_default.carried(s, out).results["dynamic"]["perplexity"][128] == {"perplexity": 40.0}
    other = dataclasses.replace(s, factor=2)
    assert extend_default.carried(other, out) == extend_default.Carried({}, [])
    assert "written with other factor" in capsys.readouterr().out
    assert extend_default.carried(s, tmp_path / "none.md") == extend_default.Carried({}, [])


def test_a_results_file_from_before_gives_its_invocations_with_its_machine(tmp_path):
    s = extend_default.Settings(base=tmp_path, factor=FACTOR)
    out = tmp_path / "extended.md"
    written(s, out, {})
    out.write_text("# title\n\n- date: 2026-11-30T07:21:29\n"
                   "- machine: AMD EPYC, 2 cores, 24 GiB RAM, Linux-6.18-x86_64-with-glibc2.36\n"
                   "- CPU flags that choose the dtype: avx2 avx512f avx512_bf16; this machine's auto dtype: bfloat16 "
                   "(chosen by cpu flags), which serve, train and eval use\n\ntable\n\n"
                   "Invocations that measured (cells are cached: each was measured once):\n\n"
                   "- 2026-11-29 17:27:27 – 2026-11-29 17:38:44 UTC, load 1.0 / 2.0 / 3.0 at the end: `python x.py`\n"
                   "\nRetrieval answers\n")
    assert extend_default.carried(s, out).invocations == [
        "- 2026-11-29 17:27:27 – 2026-11-29 17:38:44 UTC, load 1.0 / 2.0 / 3.0 at the end, on AMD EPYC, 2 cores, "
        "avx2 avx512f avx512_bf16, auto dtype bfloat16: `python x.py`"]


def test_a_trained_row_is_labelled_by_its_training(tmp_path, monkeypatch):
    monkeypatch.setattr(extend_default, "merged_model", lambda run, work: work / run.name)
    settings = {"rope": "yarn", "mode": "longlora", "attention": "s2", "pose_window": 8192, "drills": 0.0}
    labels = {}
    for name, extra in [("text", {}), ("drills", {"drills": 0.5, "drill_window": 4096}), ("same", {"drills": 0.25}),
                        ("decay", {"decay_steps": 40})]:
        run = tmp_path / name
        run.mkdir()
        (run / "run.json").write_text(json.dumps({"settings": {**settings, **extra}}))
        labels[name] = extend_default.trained_row(run, tmp_path).label
    assert labels["text"] == "yarn + longlora (s2 attention, PoSE window 8192), trained, merged"
    assert labels["drills"] == ("yarn + longlora (s2 attention, PoSE window 8192, drills 0.5 in 4096-token windows), "
                                "trained, merged")
    assert labels["same"] == "yarn + longlora (s2 attention, PoSE window 8192, drills 0.25), trained, merged"
    assert labels["decay"] == ("yarn + longlora (s2 attention, PoSE window 8192, learning rate decayed over the last "
                               "40 steps), trained, merged")
