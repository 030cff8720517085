"""Runner pieces without a server: durations, the locust command line, scenarios, bucket choice, bad input."""

import pytest

from loadtest.plan import choose_buckets
from loadtest.runner import RunConfig, exit_code, locust_command, parse_duration, run
from loadtest.scenarios import ramp_users
from loadtest.server import ServerInfo


def test_parse_duration():
    assert [parse_duration(d) for d in ("20s", "5m", "1h30m", "90")] == [20, 300, 5400, 90]
    with pytest.raises(ValueError, match="duration"):
        parse_duration("5x")


def test_locust_command(tmp_path):
    cmd = locust_command(RunConfig(host="http://h:1", out=tmp_path, users=3, duration="20s"))
    assert cmd[1:3] == ["-m", "locust"] and "--headless" in cmd
    assert cmd[cmd.index("--csv") + 1] == str(tmp_path / "locust")
    assert cmd[cmd.index("--html") + 1] == str(tmp_path / "locust.html")
    assert cmd[cmd.index("--users") + 1] == "3" and cmd[cmd.index("--run-time") + 1] == "20s"


def test_config_checks(tmp_path):
    with pytest.raises(ValueError, match="scenario"):
        RunConfig(host="h", out=tmp_path, scenario="nope")
    with pytest.raises(ValueError, match="at least 2"):
        RunConfig(host="h", out=tmp_path, scenario="long-vs-short", users=1)


def test_ramp_steps():
    assert [ramp_users(8, 40, t) for t in (0, 9.9, 10, 25, 39.9, 40)] == [2, 2, 4, 6, 8, None]


def test_choose_buckets():
    info = ServerInfo("m", 512)
    assert choose_buckets(None, info, 32, False) == ["480"]  # no default bucket fits: one at the limit
    assert choose_buckets(None, ServerInfo("m", 10000), 32, False) == ["1k", "4k", "8k"]
    assert choose_buckets(["400", "200"], info, 32, False) == ["200", "400"]
    assert choose_buckets(["200", "300"], info, 32, True) == ["200", "480"]
    with pytest.raises(ValueError, match="max_model_len 512"):
        choose_buckets(["1k"], info, 32, False)


def test_exit_code():
    ok, bad = {"failure": None}, {"failure": "http 500"}
    assert exit_code(1, [ok]) == 0  # Locust's 1 from wrong passkeys alone
    assert exit_code(1, [ok, bad]) == 1 and exit_code(0, []) == 1 and exit_code(2, [ok]) == 2
    assert exit_code(1, [ok, bad], allowed=1) == 0 and exit_code(1, [ok, bad, bad], allowed=1) == 1  # --max-failures


def test_unreachable_host_is_bad_input(tmp_path):
    said = []
    code = run(RunConfig(host="http://127.0.0.1:9", out=tmp_path / "r"), log=said.append)
    assert code == 2 and len(said) == 1 and "cannot reach" in said[0]
    assert not (tmp_path / "r").exists()  # nothing started


def test_baseline_and_needle_flags(tmp_path):
    from loadtest.__main__ import parse_args

    cfg = parse_args(["--host", "http://h:1", "--out", str(tmp_path), "--chunk-tokens", "512",
                                      "--original-context", "2048"])
    assert cfg.baseline and cfg.chunk_tokens == 512 and cfg.original_context == 2048
    assert not parse_args(["--host", "h", "--out", str(tmp_path), "--no-baseline"]).baseline
    with pytest.raises(ValueError, match="--chunk-tokens must be a positive token count"):
        RunConfig(host="h", out=tmp_path, chunk_tokens=0)


def test_the_runner_imports_no_torch_transformers_or_locust():
    import subprocess
    import sys

    code = ("import sys, loadtest.__main__, loadtest.baseline, loadtest.accuracy; "
            "print(sorted(m for m in ('torch', 'transformers', 'locust') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_command_line_hides_the_api_key():
    from loadtest.__main__ import command_line

    assert command_line(["--host", "http://h:1", "--api-key", "s3cret", "--users", "2"]) == \
        "python -m loadtest --host http://h:1 --api-key '***' --users 2"
    assert command_line(["--api-key=s3cret", "--out", "my results"]) == \
        "python -m loadtest '--api-key=***' --out 'my results'"
