"""The table of number formats for `vllm-planner dtypes`: range, precision, bytes per parameter and
a note on each (raw numbers; the CLI formats them)."""

from __future__ import annotations

from planner.dtypes import FORMATS, KIND_INT, NumberFormat


def _g(x: float) -> str:
    return f"{x:g}"


def _note(f: NumberFormat) -> str:
    fp32 = FORMATS["fp32"]
    if f.name == "fp32":
        return f"reference: ~{f.decimal_digits:.1f} digits, range to {_g(f.max_value)}"
    if f.name == "fp16":
        return f"fp16 overflows above {_g(f.max_value)}; keep activations in range or use bf16"
    if f.name == "bf16":
        same = f.exponent_bits == fp32.exponent_bits
        return (
            "bf16 keeps fp32's " if same else "bf16 has "
        ) + f"{f.exponent_bits} exponent bits: same range, fewer digits"
    if f.name == "fp8_e4m3":
        return f"OCP e4m3fn: no inf, only S.1111.111 is NaN, so the top is {_g(f.max_value)}; needs scales"
    if f.name == "fp8_e5m2":
        return f"IEEE-like (inf, NaN): range to {_g(f.max_value)}, fewer digits than e4m3"
    if f.kind == KIND_INT:
        lo = -(1 << (f.bits - 1))
        return f"integer codes {lo}..{int(f.max_value)}; the quantization method's scales are extra"
    if f.name == "nf4":
        dq = f.with_double_quant().bytes_per_param
        return (
            f"16 normal-quantile levels in [-1, 1]; {f.block_size} share an {f.scale_format} absmax "
            f"({dq:g} B/param with double quant)"
        )
    if f.name == "mxfp4":
        return f"fp4 e2m1 (max {_g(f.max_value)}); {f.block_size} share one {f.scale_format.upper()} power-of-two scale"
    if f.name == "mxfp8":
        return f"fp8 e4m3 (max {_g(f.max_value)}); {f.block_size} share one {f.scale_format.upper()} power-of-two scale"
    if f.name == "nvfp4":
        return (
            f"fp4 e2m1 (max {_g(f.max_value)}); {f.block_size} share one {f.scale_format} scale, "
            f"plus one {f.tensor_scale_format} scale per tensor"
        )
    return ""


def formats_table() -> list[dict]:
    """One row per format for the `vllm-planner dtypes` command (raw numbers; None = not applicable)."""
    return [
        {
            "format": f.name,
            "bits": f.bits,
            "exponent bits": f.exponent_bits,
            "mantissa bits": f.mantissa_bits,
            "largest value": f.max_value,
            "smallest normal": f.min_normal,
            "decimal digits": None if f.decimal_digits is None else round(f.decimal_digits, 2),
            "bytes per parameter": f.bytes_per_param,
            "note": _note(f),
        }
        for f in FORMATS.values()
    ]
