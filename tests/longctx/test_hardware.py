"""The dtype choice, for both kinds of CPU this project meets (through injected flags and environments)."""

import pytest

from finetune.__main__ import main
from longctx.hardware import DTYPE_ENV, DtypeError, best_dtype, choose_dtype

AVX2_ONLY = {"fpu", "avx", "avx2", "fma"}
NATIVE_BF16 = AVX2_ONLY | {"avx512f", "avx512_bf16"}
AMX = AVX2_ONLY | {"avx512f", "amx_bf16", "amx_tile"}


@pytest.mark.parametrize("flags, dtype", [(AVX2_ONLY, "float32"), (NATIVE_BF16, "bfloat16"), (AMX, "bfloat16"),
                                          (set(), "float32")])
def test_cpu_flags_choose_bf16_only_where_it_is_native(flags, dtype):
    choice = choose_dtype(False, flags, env={})
    assert choice.dtype == dtype and choice.reason == "cpu flags"
    assert set(choice.cpu_flags) == flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}


@pytest.mark.parametrize("value, dtype", [("float32", "float32"), ("bfloat16", "bfloat16"), ("BF16", "bfloat16"),
                                          ("fp32", "float32"), ("", None)])
def test_longctx_dtype_overrides_both_kinds(value, dtype):
    for flags in (AVX2_ONLY, NATIVE_BF16):
        choice = choose_dtype(False, flags, env={DTYPE_ENV: value})
        expected = dtype or ("bfloat16" if flags is NATIVE_BF16 else "float32")
        assert choice.dtype == expected and choice.reason == (DTYPE_ENV if dtype else "cpu flags")
    assert best_dtype(True, env={DTYPE_ENV: value}, cuda_bf16=False) == (dtype or "float16")


def test_a_bad_override_is_one_line_naming_the_fix(monkeypatch, tiny_model, corpus, tmp_path, capsys):
    with pytest.raises(DtypeError, match="LONGCTX_DTYPE=float32 or bfloat16"):
        choose_dtype(False, AVX2_ONLY, env={DTYPE_ENV: "float16"})
    monkeypatch.setenv(DTYPE_ENV, "half")
    assert main(["eval", str(tiny_model), "--data", str(corpus), "--out", str(tmp_path / "e"), "--lengths", "64",
                 "--passkey-trials", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("finetune: error: LONGCTX_DTYPE='half'") and len(err.splitlines()) == 1
