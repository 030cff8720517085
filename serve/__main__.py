"""`python -m serve [MODEL_DIR] [options] [-- extra vLLM args]`: serve a checkpoint through vLLM's
OpenAI-compatible server with long-context defaults. Without MODEL_DIR, the embedded default model."""

from __future__ import annotations

import argparse
import os
import sys

from longctx import cli
from longctx.rope import RopeConfigError, check_config
from serve.args import Machine, build_command, effective_config, max_model_len
from serve.config import ServeConfig
from serve.launch import LaunchError, check_port_free, read_checkpoint_config, run_server, usage_banner


PROG = "python -m serve"


def parser() -> argparse.ArgumentParser:
    return cli.parser(ServeConfig, PROG, __doc__, positional=("model",), skip=("vllm_args",))


def parse_args(argv: list[str]) -> ServeConfig:
    """Our flags, then everything after `--` passed to vLLM as it is; the key falls back to $LONGCTX_API_KEY."""
    ours, extra = (argv[: argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    given = cli.given_values(vars(parser().parse_args(ours)), ("model",))
    given["api_key"] = given.get("api_key") or os.environ.get("LONGCTX_API_KEY") or None
    return cli.build(ServeConfig, {**given, "vllm_args": tuple(extra)}, PROG, positional=("model",))


def detect_machine() -> Machine:
    from longctx.hardware import available_memory_bytes, best_dtype, cuda_available, usable_cpus
    from longctx.home import longctx_home

    cuda = cuda_available()
    return Machine(cuda=cuda, dtype=best_dtype(cuda), cpus=tuple(usable_cpus()),
                   available_bytes=available_memory_bytes(), cache_root=longctx_home() / "vllm-cache")


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse_args(sys.argv[1:] if argv is None else argv)
        model = cfg.model
        if model is None:
            from longctx.default_model import ensure_default_model

            model = ensure_default_model()
        model = model.expanduser().resolve()
        config = read_checkpoint_config(model)
        check_config(effective_config(config, cfg))
        check_port_free(cfg.host, cfg.port)
        machine = detect_machine()
        argv_, env = build_command(config, cfg, machine, model, python=sys.executable)
    except (ValueError, LaunchError, RopeConfigError) as err:  # UsageError, RopeConfigError are ValueErrors too
        return cli.fail("longctx serve", str(err))
    url = f"http://{cfg.host}:{cfg.port}/v1"
    name = cfg.name or model.name
    banner = usage_banner(url, name, max_model_len(config, cfg), cfg.api_key)
    print(f"longctx serve: starting vLLM ({'CUDA' if machine.cuda else 'CPU'}, {argv_[argv_.index('--dtype') + 1]}, "
          f"profile {cfg.profile}); the first start compiles for a few minutes", flush=True)
    try:
        return run_server(argv_, env, url, banner, cfg.api_key)
    except LaunchError as err:  # vLLM's own output may end without a newline: start a fresh line
        print(f"\nlongctx serve: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
