import dataclasses
import math
import struct

import pytest

from planner.dtypes import (
    ALIASES,
    FORMATS,
    SCALE_FORMATS,
    NumberFormat,
    get_format,
    torch_dtype_bytes,
)
from planner.dtypes_table import formats_table
from planner.errors import PlannerError

CANONICAL = ["fp32", "fp16", "bf16", "fp8_e4m3", "fp8_e5m2", "int8", "int4", "nf4", "mxfp4", "mxfp8", "nvfp4"]


def test_canonical_names_and_kinds():
    assert list(FORMATS) == CANONICAL
    kinds = {n: f.kind for n, f in FORMATS.items()}
    assert kinds == {
        "fp32": "float",
        "fp16": "float",
        "bf16": "float",
        "fp8_e4m3": "float",
        "fp8_e5m2": "float",
        "int8": "int",
        "int4": "int",
        "nf4": "lookup",
        "mxfp4": "block-scaled float",
        "mxfp8": "block-scaled float",
        "nvfp4": "block-scaled float",
    }


@pytest.mark.parametrize(
    "name, expected",
    [
        ("fp32", 3.4028234663852886e38),
        ("fp16", 65504.0),
        ("bf16", 3.3895313892515355e38),
        ("fp8_e4m3", 448.0),
        ("fp8_e5m2", 57344.0),
        ("mxfp4", 6.0),  # fp4 e2m1
        ("mxfp8", 448.0),  # fp8 e4m3fn values
        ("nvfp4", 6.0),
        ("int8", 127.0),
        ("int4", 7.0),
        ("nf4", 1.0),
    ],
)
def test_max_value(name, expected):
    assert get_format(name).max_value == expected


@pytest.mark.parametrize(
    "name, expected",
    [
        ("fp32", 1.1754943508222875e-38),
        ("fp16", 6.103515625e-05),
        ("bf16", 1.1754943508222875e-38),
        ("fp8_e4m3", 2.0**-6),
        ("fp8_e5m2", 2.0**-14),
        ("mxfp4", 1.0),
        ("int8", None),
        ("nf4", None),
    ],
)
def test_min_normal(name, expected):
    assert get_format(name).min_normal == expected


def test_bf16_min_normal_equals_fp32():
    assert get_format("bf16").min_normal == get_format("fp32").min_normal


@pytest.mark.parametrize(
    "name, expected",
    [
        ("fp32", 2.0**-149),
        ("fp16", 2.0**-24),
        ("bf16", 2.0**-133),
        ("fp8_e4m3", 2.0**-9),
        ("fp8_e5m2", 2.0**-16),
        ("mxfp4", 0.5),
        ("int4", None),
    ],
)
def test_min_subnormal(name, expected):
    assert get_format(name).min_subnormal == expected


@pytest.mark.parametrize(
    "name, expected",
    [("fp32", 7.22), ("fp16", 3.31), ("bf16", 2.41), ("fp8_e4m3", 1.20), ("fp8_e5m2", 0.90)],
)
def test_decimal_digits(name, expected):
    assert get_format(name).decimal_digits == pytest.approx(expected, abs=0.005)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("fp32", 4.0),
        ("fp16", 2.0),
        ("bf16", 2.0),
        ("fp8_e4m3", 1.0),
        ("fp8_e5m2", 1.0),
        ("int8", 1.0),
        ("int4", 0.5),
        ("mxfp4", 0.53125),  # (4 + 8/32) / 8
        ("mxfp8", 1.03125),  # (8 + 8/32) / 8
        ("nvfp4", 0.5625),  # (4 + 8/16) / 8, per-tensor fp32 scale ignored
        ("nf4", 0.5 + 4 / 64),  # fp32 absmax per 64
    ],
)
def test_bytes_per_param(name, expected):
    assert get_format(name).bytes_per_param == expected


def test_nf4_double_quant_bytes_per_param():
    dq = get_format("nf4").with_double_quant()
    assert dq.name == "nf4"
    assert dq.bytes_per_param == 0.5 + (8 / 64 + 32 / (64 * 256)) / 8
    assert dq.bytes_per_param < get_format("nf4").bytes_per_param
    with pytest.raises(PlannerError):
        get_format("int4").with_double_quant()


def test_with_scales_models_group_quantization():
    gptq_like = get_format("int4").with_scales(128, "fp16")
    assert gptq_like.bytes_per_param == (4 + 16 / 128) / 8
    assert get_format("int4").bytes_per_param == 0.5  # original untouched
    with pytest.raises(PlannerError, match="scale format"):
        get_format("int4").with_scales(128, "fp7")


@pytest.mark.parametrize(
    "name, expected",
    [
        ("fp32", 4.0),
        ("fp16", 2.0),
        ("bf16", 2.0),
        ("fp8_e4m3", 1.0),
        ("fp8_e5m2", 1.0),
        ("int8", 1.0),
        ("int4", 0.5),
        ("nf4", 0.5),
        ("mxfp4", 0.5),
        ("nvfp4", 0.5),  # 4-bit codes; their block scales are not counted here
    ],
)
def test_element_bytes_leave_out_the_block_scales(name, expected):
    assert get_format(name).element_bytes == expected


def test_block_definitions():
    mx, nv, nf = get_format("mxfp4"), get_format("nvfp4"), get_format("nf4")
    assert (mx.block_size, mx.scale_format, mx.tensor_scale_format) == (32, "e8m0", None)
    assert (nv.block_size, nv.scale_format, nv.tensor_scale_format) == (16, "fp8_e4m3", "fp32")
    assert (nf.block_size, nf.scale_format) == (64, "fp32")
    assert SCALE_FORMATS["e8m0"].bits == 8
    assert not SCALE_FORMATS["e8m0"].signed
    # E8M0 scales are powers of two 2**-127 .. 2**127
    assert SCALE_FORMATS["e8m0"].max_value == 2.0**127
    assert SCALE_FORMATS["e8m0"].min_normal == 2.0**-127


def test_field_layouts_and_biases():
    for f in FORMATS.values():
        if f.exponent_bits is None:
            assert f.mantissa_bits is None and f.exponent_bias is None
            continue
        assert 1 + f.exponent_bits + f.mantissa_bits == f.bits
        assert f.exponent_bias == 2 ** (f.exponent_bits - 1) - 1
    assert get_format("fp8_e4m3").has_inf is False
    assert get_format("fp8_e5m2").has_inf is True


def test_bf16_shares_fp32_range_but_fp16_does_not():
    order = lambda name: math.floor(math.log10(get_format(name).max_value))  # noqa: E731
    assert order("bf16") == order("fp32") == 38
    assert order("fp16") == 4
    assert order("fp16") != order("fp32")


def test_fp16_matches_struct_half():
    # struct 'e' is IEEE 754 binary16
    fp16 = get_format("fp16")
    assert struct.unpack("<e", struct.pack("<e", fp16.max_value))[0] == 65504.0
    assert struct.unpack("<e", struct.pack("<e", fp16.min_normal))[0] == fp16.min_normal
    assert struct.unpack("<e", struct.pack("<e", fp16.min_subnormal))[0] == fp16.min_subnormal
    assert struct.unpack("<e", b"\xff\x7b")[0] == fp16.max_value  # 0x7BFF
    with pytest.raises(OverflowError):
        struct.pack("<e", 65520.0)  # rounds past the largest finite value


def test_fp32_matches_struct_float():
    fp32 = get_format("fp32")
    assert struct.unpack("<f", b"\xff\xff\x7f\x7f")[0] == fp32.max_value  # 0x7F7FFFFF
    assert struct.unpack("<f", b"\x00\x00\x80\x00")[0] == fp32.min_normal  # 0x00800000
    assert struct.unpack("<f", b"\x01\x00\x00\x00")[0] == fp32.min_subnormal


def test_bf16_is_truncated_fp32():
    # bf16 is the top 16 bits of fp32: 0x7F7F -> 0x7F7F0000
    assert struct.unpack("<f", b"\x00\x00\x7f\x7f")[0] == get_format("bf16").max_value


def test_nf4_levels_match_bitsandbytes():
    # bitsandbytes' NF4 code book (float32), from create_normal_map(0.9677083)
    ref = [
        -1.0,
        -0.6961928009986877,
        -0.5250730514526367,
        -0.39491748809814453,
        -0.28444138169288635,
        -0.18477343022823334,
        -0.09105003625154495,
        0.0,
        0.07958029955625534,
        0.16093020141124725,
        0.24611230194568634,
        0.33791524171829224,
        0.44070982933044434,
        0.5626170039176941,
        0.7229568362236023,
        1.0,
    ]
    levels = get_format("nf4").levels
    assert len(levels) == 2 ** get_format("nf4").bits
    assert levels == pytest.approx(ref, abs=1e-6)
    assert get_format("fp16").levels is None


@pytest.mark.parametrize(
    "alias, canonical",
    [
        ("float32", "fp32"),
        ("float", "fp32"),
        ("torch.float32", "fp32"),
        ("FP32", "fp32"),
        ("float16", "fp16"),
        ("half", "fp16"),
        ("torch.float16", "fp16"),
        ("bfloat16", "bf16"),
        ("torch.bfloat16", "bf16"),
        ("BF16", "bf16"),
        ("fp8", "fp8_e4m3"),
        ("e4m3", "fp8_e4m3"),
        ("float8_e4m3fn", "fp8_e4m3"),
        ("FP8-E4M3", "fp8_e4m3"),
        ("e5m2", "fp8_e5m2"),
        ("float8_e5m2", "fp8_e5m2"),
        ("int4", "int4"),
        ("INT8", "int8"),
        ("mxfp4", "mxfp4"),
        ("NVFP4", "nvfp4"),
        ("nf4", "nf4"),
        (" bf16 ", "bf16"),
    ],
)
def test_aliases(alias, canonical):
    assert get_format(alias).name == canonical


def test_every_alias_resolves():
    for alias, canonical in ALIASES.items():
        assert get_format(alias) is FORMATS[canonical]


@pytest.mark.parametrize("bad", ["fp4", "int3", "e3m4", "", None, 16])
def test_unknown_format_raises_with_valid_names(bad):
    with pytest.raises(PlannerError) as err:
        get_format(bad)
    msg = str(err.value)
    assert "\n" not in msg
    if isinstance(bad, str) and bad:
        assert "fp32" in msg and "nvfp4" in msg


@pytest.mark.parametrize(
    "name, expected",
    [
        ("float32", 4),
        ("torch.float32", 4),
        ("fp32", 4),
        ("F32", 4),
        ("bfloat16", 2),
        ("torch.bfloat16", 2),
        ("BF16", 2),
        ("float16", 2),
        ("torch.float16", 2),
        ("half", 2),
        ("F16", 2),
        ("fp8", 1),
        ("float8_e4m3fn", 1),
        ("torch.float8_e5m2", 1),
        ("F8_E4M3", 1),
        ("float8_e4m3fnuz", 1),
        ("int8", 1),
        ("uint8", 1),
        ("torch.uint8", 1),
        ("U8", 1),
        ("int32", 4),
        ("I32", 4),
        ("int64", 8),
        ("float64", 8),
    ],
)
def test_torch_dtype_bytes(name, expected):
    assert torch_dtype_bytes(name) == expected
    assert isinstance(torch_dtype_bytes(name), int)


@pytest.mark.parametrize(
    "name, hint",
    [
        ("auto", "config"),
        ("nf4", "bytes_per_param"),
        ("int4", "bytes_per_param"),
        ("mxfp4", "bytes_per_param"),
        ("float7", "unknown"),
        ("", "non-empty"),
    ],
)
def test_torch_dtype_bytes_rejects(name, hint):
    with pytest.raises(PlannerError, match=hint) as err:
        torch_dtype_bytes(name)
    assert "\n" not in str(err.value)


def test_formats_table():
    rows = formats_table()
    assert [r["format"] for r in rows] == CANONICAL
    cols = [
        "format",
        "bits",
        "exponent bits",
        "mantissa bits",
        "largest value",
        "smallest normal",
        "decimal digits",
        "bytes per parameter",
        "note",
    ]
    for r in rows:
        assert list(r) == cols
        assert r["note"]
    by = {r["format"]: r for r in rows}
    assert by["bf16"]["note"] == "bf16 keeps fp32's 8 exponent bits: same range, fewer digits"
    assert "65504" in by["fp16"]["note"]
    assert "448" in by["fp8_e4m3"]["note"]
    assert by["mxfp4"]["bytes per parameter"] == 0.53125
    assert by["fp16"]["largest value"] == 65504.0
    assert by["int8"]["smallest normal"] is None


def test_formats_are_frozen_and_validated():
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_format("fp16").bits = 8
    with pytest.raises(PlannerError):
        NumberFormat(name="bad", kind="float", bits=8, exponent_bits=5, mantissa_bits=5, exponent_bias=15)
    with pytest.raises(PlannerError):
        NumberFormat(name="bad", kind="decimal", bits=8)
    with pytest.raises(PlannerError):
        NumberFormat(name="bad", kind="int", bits=4, block_size=32)
