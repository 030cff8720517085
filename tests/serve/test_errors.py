"""Bad input to `python -m serve`: one clear line on stderr and exit code 2, before vLLM starts."""

import json
import socket
import subprocess
import sys

import pytest

from tests.conftest import make_served_checkpoint


def serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "serve", *args], capture_output=True, text=True, timeout=120)


def assert_refused(done: subprocess.CompletedProcess, *needles: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("longctx serve: error:"), done.stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_served_checkpoint(tmp_path_factory.mktemp("ck") / "tiny")


def with_config(src, dst, change) -> str:
    import shutil

    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    change(config)
    (dst / "config.json").write_text(json.dumps(config))
    return str(dst)


def test_missing_folder(tmp_path):
    assert_refused(serve(str(tmp_path / "nope")), "does not exist")


def test_folder_without_config(tmp_path):
    assert_refused(serve(str(tmp_path)), "no config.json")


def test_model_without_rope(checkpoint, tmp_path):
    def drop(config):
        config.pop("rope_parameters"), config.pop("longctx")

    assert_refused(serve(with_config(checkpoint, tmp_path / "norope", drop)), "no RoPE")


def test_merge_that_lost_its_rope_scaling(checkpoint, tmp_path):
    def lose(config):
        config["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0}

    assert_refused(serve(with_config(checkpoint, tmp_path / "lost", lose)),
                   "trained for 512 tokens", "allows only 128", "finetune merge")


def test_inconsistent_rope(checkpoint, tmp_path):
    def wrong(config):
        config["rope_parameters"]["factor"] = 8.0

    assert_refused(serve(with_config(checkpoint, tmp_path / "wrong", wrong)), "disagree")


def test_port_in_use(checkpoint):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert_refused(serve(str(checkpoint), "--port", str(port)), f"127.0.0.1:{port}", "--port")


def test_bad_flags(checkpoint):
    assert_refused(serve(str(checkpoint), "--rope", "linear", "--factor", "0.5"), "--factor")
