"""bfloat16 autocast only where the machine has it natively."""
import pytest

from semcodec import precision


@pytest.mark.parametrize("flags, native", [
    ("fpu sse avx512f avx512_bf16 avx512_vnni", True),     # x86 with AVX512-BF16
    ("fpu sse avx512f amx_tile amx_bf16", True),            # x86 with AMX
    ("fpu sse avx2 avx512f avx512bw", False),               # AVX-512 without BF16
])
def test_cpu_bf16_is_read_from_the_cpu_flags(tmp_path, flags, native):
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: {flags}\n")
    precision._cpu_has_bf16.cache_clear()
    try:
        assert precision._cpu_has_bf16(str(info)) is native
    finally:
        precision._cpu_has_bf16.cache_clear()


def test_arm_features_line_and_missing_file(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n")
    assert precision._cpu_has_bf16(str(info)) is True
    assert precision._cpu_has_bf16(str(tmp_path / "absent")) is False


def test_environment_overrides_and_the_warning(monkeypatch):
    monkeypatch.setenv("SEMCODEC_BF16", "0")
    assert precision.fast_bf16("cpu") is False
    assert precision.slow_bf16_warning("cpu") == (
        "warning: --bf16 on cpu: this machine has no native bfloat16, so autocast runs slower than float32 here")
    monkeypatch.setenv("SEMCODEC_BF16", "1")
    assert precision.fast_bf16("cpu") is True
    assert precision.slow_bf16_warning("cpu") is None


def test_token_search_decodes_in_float32_without_native_bf16(monkeypatch):
    from semcodec.model.video_tokenizer import VideoTokenizer
    from semcodec.presets import get_preset
    from semcodec.token_search import TokenSearch
    model = VideoTokenizer(get_preset("world"))
    monkeypatch.setenv("SEMCODEC_BF16", "0")
    assert TokenSearch(model).bf16 is False
    monkeypatch.setenv("SEMCODEC_BF16", "1")
    assert TokenSearch(model).bf16 is True
