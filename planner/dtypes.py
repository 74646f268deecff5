"""Number formats: what a weight, activation or KV-cache element costs and what it can hold.

Every derived number here (largest value, smallest normal, digits, bytes per parameter) is
computed from the format's definition -- sign/exponent/mantissa bits, bias, which encodings are
reserved for inf/NaN, and the block-scale layout -- never typed in. The tests check the results
against the published values.

This module is also the single place that maps storage dtype names ("bfloat16",
"torch.float16", safetensors' "BF16", ...) to bytes: use :func:`torch_dtype_bytes`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

from planner.errors import PlannerError

__all__ = [
    "NumberFormat",
    "FORMATS",
    "SCALE_FORMATS",
    "ALIASES",
    "get_format",
    "torch_dtype_bytes",
]

KIND_FLOAT = "float"
KIND_INT = "int"
KIND_LOOKUP = "lookup"
KIND_BLOCK_FLOAT = "block-scaled float"
_KINDS = (KIND_FLOAT, KIND_INT, KIND_LOOKUP, KIND_BLOCK_FLOAT)

# bitsandbytes builds its NF4 code book from normal quantiles between 1 - OFFSET and OFFSET
# (create_normal_map(offset=0.9677083, use_extra_value=True)): 8 positive levels, 7 negative
# levels and an exact zero, then divides by the largest so the levels span [-1, 1].
_NF4_QUANTILE_OFFSET = 0.9677083


@dataclass(frozen=True)
class NumberFormat:
    """One element format, optionally with the block scales that travel with it."""

    name: str
    """Canonical name: fp32, fp16, bf16, fp8_e4m3, fp8_e5m2, int8, int4, nf4, mxfp4, nvfp4."""

    kind: str
    """"float", "int", "lookup" (a code book, nf4) or "block-scaled float" (mxfp4, nvfp4)."""

    bits: int
    """Bits per element, excluding any block scale (4 for mxfp4/nvfp4/nf4/int4)."""

    exponent_bits: int | None = None
    """Exponent field width for float formats; None for integers and code books."""

    mantissa_bits: int | None = None
    """Stored mantissa (fraction) bits, without the implicit leading 1; None for ints/nf4."""

    exponent_bias: int | None = None
    """Bias subtracted from the stored exponent field; None for ints/nf4."""

    has_inf: bool = False
    """True for IEEE-style formats: the all-ones exponent is reserved for inf and NaN."""

    has_nan: bool = False
    """Whether some encoding is NaN. Without inf, only the all-ones pattern (S.1111.111 for
    OCP fp8 e4m3fn) is NaN and the rest of the top exponent holds finite values."""

    block_size: int | None = None
    """Elements that share one scale (mxfp4 32, nvfp4 16, nf4 64); None if unscaled."""

    scale_format: str | None = None
    """Format of each block's scale: "e8m0" (mxfp4), "fp8_e4m3" (nvfp4), "fp32" (nf4 absmax)."""

    super_block_size: int | None = None
    """Blocks that share one second-level scale (nf4 double quantization: 256); else None."""

    super_scale_format: str | None = None
    """Format of the second-level scale ("fp32" for nf4 double quantization); else None."""

    tensor_scale_format: str | None = None
    """Format of a single per-tensor scale (nvfp4: "fp32"); ignored in bytes_per_param."""

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise PlannerError(
                f"number format {self.name!r} has unknown kind {self.kind!r}; use one of {', '.join(_KINDS)}"
            )
        if self.is_float:
            if self.exponent_bits is None or self.mantissa_bits is None or self.exponent_bias is None:
                raise PlannerError(f"float format {self.name!r} needs exponent_bits, mantissa_bits and exponent_bias")
            if self.bits - self.exponent_bits - self.mantissa_bits not in (0, 1):
                raise PlannerError(
                    f"float format {self.name!r}: {self.bits} bits cannot hold a sign, {self.exponent_bits} exponent "
                    f"and {self.mantissa_bits} mantissa bits; fix the bit widths"
                )
        if (self.block_size is None) != (self.scale_format is None):
            raise PlannerError(f"number format {self.name!r}: give block_size and scale_format together")
        if (self.super_block_size is None) != (self.super_scale_format is None):
            raise PlannerError(f"number format {self.name!r}: give super_block_size and super_scale_format together")
        if self.super_block_size is not None and self.block_size is None:
            raise PlannerError(f"number format {self.name!r}: a second-level scale needs a block scale first")
        for size in (self.block_size, self.super_block_size):
            if size is not None and size < 1:
                raise PlannerError(f"number format {self.name!r}: block sizes must be positive integers")

    # ---- shape of the encoding ----------------------------------------------------------

    @property
    def is_float(self) -> bool:
        """True for sign/exponent/mantissa formats (including the fp4 elements of mxfp4/nvfp4)."""
        return self.kind in (KIND_FLOAT, KIND_BLOCK_FLOAT)

    @property
    def is_block_scaled(self) -> bool:
        """True when elements carry shared block scales (mxfp4, nvfp4, nf4)."""
        return self.block_size is not None

    @property
    def signed(self) -> bool:
        """Whether the format has a sign bit (every element format here; E8M0 scales do not)."""
        if self.is_float:
            return self.bits - self.exponent_bits - self.mantissa_bits == 1
        return True

    def _max_exponent_field(self) -> tuple[int, int]:
        """(largest exponent field, largest mantissa field) that still encode a finite value."""
        top = (1 << self.exponent_bits) - 1
        all_ones = (1 << self.mantissa_bits) - 1
        if self.has_inf:  # IEEE: the whole top exponent is inf/NaN
            return top - 1, all_ones
        if self.has_nan:  # "fn": only the all-ones pattern is NaN
            if self.mantissa_bits == 0:
                return top - 1, 0
            return top, all_ones - 1
        return top, all_ones  # every encoding is finite (fp4 e2m1)

    # ---- derived numbers ----------------------------------------------------------------

    @property
    def max_value(self) -> float:
        """Largest finite value. Ints: the largest code (2**(bits-1) - 1); nf4: largest level (1.0)."""
        if self.is_float:
            exp_field, man_field = self._max_exponent_field()
            m = self.mantissa_bits
            if m == 0:
                return math.ldexp(1.0, exp_field - self.exponent_bias)
            # (1 + man_field / 2**m) * 2**(exp_field - bias), exact in binary
            return math.ldexp((1 << m) + man_field, exp_field - self.exponent_bias - m)
        if self.kind == KIND_INT:
            return float((1 << (self.bits - 1)) - 1)
        return max(self.levels)

    @property
    def min_normal(self) -> float | None:
        """Smallest positive normal value (2**(1 - bias)); None for ints and code books.

        With no mantissa bits (E8M0) there are no subnormals and exponent field 0 is a
        normal power of two: 2**(-bias)."""
        if not self.is_float:
            return None
        if self.mantissa_bits == 0:
            return math.ldexp(1.0, -self.exponent_bias)
        return math.ldexp(1.0, 1 - self.exponent_bias)

    @property
    def min_subnormal(self) -> float | None:
        """Smallest positive value, 2**(1 - bias - mantissa_bits); None without subnormals."""
        if not self.is_float or self.mantissa_bits == 0:
            return None
        return math.ldexp(1.0, 1 - self.exponent_bias - self.mantissa_bits)

    @property
    def decimal_digits(self) -> float | None:
        """Significant decimal digits of a normal value: (mantissa_bits + 1) * log10(2)."""
        if not self.is_float:
            return None
        return (self.mantissa_bits + 1) * math.log10(2)

    @property
    def element_bytes(self) -> float:
        """Bytes of one element without its share of any scale: bits / 8."""
        return self.bits / 8

    @property
    def scale_bits_per_element(self) -> float:
        """Bits of block scales each element carries (the per-tensor scale is not counted)."""
        extra = 0.0
        if self.block_size is not None:
            extra += _scale_bits(self.scale_format) / self.block_size
        if self.super_block_size is not None:
            extra += _scale_bits(self.super_scale_format) / (self.block_size * self.super_block_size)
        return extra

    @property
    def bytes_per_param(self) -> float:
        """Bytes per parameter including block-scale overhead: (bits + scale bits per element) / 8.

        mxfp4 (4 + 8/32)/8 = 0.53125; nvfp4 (4 + 8/16)/8 = 0.5625; nf4 (4 + 32/64)/8 = 0.5625,
        or with double quantization (4 + 8/64 + 32/(64*256))/8. Scales that a quantization
        *method* adds to int8/int4 (GPTQ/AWQ group scales) are not part of the format: use
        :meth:`with_scales` to model them."""
        return (self.bits + self.scale_bits_per_element) / 8

    @property
    def levels(self) -> tuple[float, ...] | None:
        """The sorted code book of a lookup format (nf4's 16 levels in [-1, 1]); else None."""
        if self.kind != KIND_LOOKUP:
            return None
        return _nf4_levels()

    # ---- variants -----------------------------------------------------------------------

    def with_scales(
        self,
        block_size: int,
        scale_format: str,
        super_block_size: int | None = None,
        super_scale_format: str | None = None,
    ) -> NumberFormat:
        """This format with (other) block scales, e.g. int4 with fp16 scales per 128 (GPTQ-like)."""
        _scale_bits(scale_format)
        if super_scale_format is not None:
            _scale_bits(super_scale_format)
        return replace(
            self,
            block_size=block_size,
            scale_format=_canonical_scale_name(scale_format),
            super_block_size=super_block_size,
            super_scale_format=None if super_scale_format is None else _canonical_scale_name(super_scale_format),
        )

    def with_double_quant(self) -> NumberFormat:
        """bitsandbytes double quantization: 8-bit absmax per block, fp32 per 256 blocks (nf4 only)."""
        if self.kind != KIND_LOOKUP:
            raise PlannerError(f"double quantization applies to nf4, not {self.name}; drop the double-quant option")
        return replace(self, scale_format="dynamic8", super_block_size=256, super_scale_format="fp32")


def _float(name, bits, e, m, *, has_inf, has_nan, kind=KIND_FLOAT, **blocks) -> NumberFormat:
    return NumberFormat(
        name=name,
        kind=kind,
        bits=bits,
        exponent_bits=e,
        mantissa_bits=m,
        exponent_bias=(1 << (e - 1)) - 1,
        has_inf=has_inf,
        has_nan=has_nan,
        **blocks,
    )


_E2M1 = dict(bits=4, e=2, m=1, has_inf=False, has_nan=False)  # OCP fp4 element of mxfp4 and nvfp4

FORMATS: dict[str, NumberFormat] = {
    f.name: f
    for f in (
        _float("fp32", 32, 8, 23, has_inf=True, has_nan=True),
        _float("fp16", 16, 5, 10, has_inf=True, has_nan=True),
        _float("bf16", 16, 8, 7, has_inf=True, has_nan=True),
        _float("fp8_e4m3", 8, 4, 3, has_inf=False, has_nan=True),  # OCP e4m3fn
        _float("fp8_e5m2", 8, 5, 2, has_inf=True, has_nan=True),
        NumberFormat(name="int8", kind=KIND_INT, bits=8),
        NumberFormat(name="int4", kind=KIND_INT, bits=4),
        NumberFormat(name="nf4", kind=KIND_LOOKUP, bits=4, block_size=64, scale_format="fp32"),
        _float("mxfp4", **_E2M1, kind=KIND_BLOCK_FLOAT, block_size=32, scale_format="e8m0"),
        _float(
            "mxfp8", 8, 4, 3, has_inf=False, has_nan=True, kind=KIND_BLOCK_FLOAT, block_size=32, scale_format="e8m0"
        ),
        _float(
            "nvfp4", **_E2M1, kind=KIND_BLOCK_FLOAT, block_size=16, scale_format="fp8_e4m3", tensor_scale_format="fp32"
        ),
    )
}
"""The element formats the planner knows, by canonical name."""

SCALE_FORMATS: dict[str, NumberFormat] = {
    # OCP MX shared scale: unsigned, 8 exponent bits, no mantissa, 0xFF is NaN -> 2**-127 .. 2**127
    "e8m0": _float("e8m0", 8, 8, 0, has_inf=False, has_nan=True),
    # bitsandbytes' 8-bit dynamic code book used for double-quantized absmax values
    "dynamic8": NumberFormat(name="dynamic8", kind=KIND_LOOKUP, bits=8),
}
"""Formats that appear only as block scales; block scales may also use any FORMATS entry."""

ALIASES: dict[str, str] = {
    "fp32": "fp32",
    "float32": "fp32",
    "float": "fp32",
    "f32": "fp32",
    "torch.float32": "fp32",
    "fp16": "fp16",
    "float16": "fp16",
    "half": "fp16",
    "f16": "fp16",
    "torch.float16": "fp16",
    "torch.half": "fp16",
    "bf16": "bf16",
    "bfloat16": "bf16",
    "torch.bfloat16": "bf16",
    "fp8_e4m3": "fp8_e4m3",
    "fp8": "fp8_e4m3",
    "e4m3": "fp8_e4m3",
    "fp8_e4m3fn": "fp8_e4m3",
    "e4m3fn": "fp8_e4m3",
    "float8_e4m3fn": "fp8_e4m3",
    "torch.float8_e4m3fn": "fp8_e4m3",
    "f8_e4m3": "fp8_e4m3",
    "fp8_e5m2": "fp8_e5m2",
    "e5m2": "fp8_e5m2",
    "float8_e5m2": "fp8_e5m2",
    "torch.float8_e5m2": "fp8_e5m2",
    "f8_e5m2": "fp8_e5m2",
    "int8": "int8",
    "i8": "int8",
    "torch.int8": "int8",
    "int4": "int4",
    "nf4": "nf4",
    "mxfp4": "mxfp4",
    "mxfp8": "mxfp8",
    "nvfp4": "nvfp4",
}
"""Accepted spellings (lower case, '-' read as '_') -> canonical FORMATS name."""


def _normalize(name: object, what: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise PlannerError(f"{what} must be a non-empty string, got {name!r}; use e.g. 'bf16'")
    return name.strip().lower().replace("-", "_")


def get_format(name: str) -> NumberFormat:
    """The NumberFormat for a canonical name or alias (case-insensitive)."""
    key = _normalize(name, "number format")
    canonical = ALIASES.get(key)
    if canonical is None:
        raise PlannerError(
            f"unknown number format {name!r}; use one of {', '.join(FORMATS)} "
            f"(aliases like float32, half, bfloat16, fp8, e4m3, e5m2 also work)"
        )
    return FORMATS[canonical]


def _canonical_scale_name(name: str) -> str:
    key = _normalize(name, "scale format")
    if key in SCALE_FORMATS:
        return key
    return get_format(key).name


def _scale_bits(name: str) -> int:
    key = _normalize(name, "scale format")
    if key in SCALE_FORMATS:
        return SCALE_FORMATS[key].bits
    try:
        return get_format(key).bits
    except PlannerError:
        raise PlannerError(
            f"unknown scale format {name!r}; use one of {', '.join([*SCALE_FORMATS, *FORMATS])}"
        ) from None


@cache
def _nf4_levels() -> tuple[float, ...]:
    from statistics import NormalDist  # lazy: only nf4's code book needs it

    ppf = NormalDist().inv_cdf
    off = _NF4_QUANTILE_OFFSET

    def linspace(a: float, b: float, n: int) -> list[float]:
        return [a + (b - a) * i / (n - 1) for i in range(n)]

    positive = [ppf(p) for p in linspace(off, 0.5, 9)[:-1]]
    negative = [-ppf(p) for p in linspace(off, 0.5, 8)[:-1]]
    raw = sorted(positive + negative + [0.0])
    top = max(raw)
    return tuple(v / top for v in raw)


# ---- storage dtypes -----------------------------------------------------------------------

# Storage dtypes that are not element formats above, by bit width.
_OTHER_STORAGE_BITS: dict[str, int] = {
    "float64": 64,
    "double": 64,
    "f64": 64,
    "int64": 64,
    "long": 64,
    "i64": 64,
    "int32": 32,
    "int": 32,
    "i32": 32,
    "int16": 16,
    "short": 16,
    "i16": 16,
    "uint8": 8,
    "u8": 8,
    "bool": 8,
    "float8_e4m3fnuz": 8,
    "float8_e5m2fnuz": 8,
    "f8_e4m3fnuz": 8,
    "f8_e5m2fnuz": 8,
}
_STORAGE_FORMATS = ("fp32", "fp16", "bf16", "fp8_e4m3", "fp8_e5m2", "int8")


def torch_dtype_bytes(name: str) -> int:
    """Bytes per element of a tensor storage dtype, as spelled in configs, torch or safetensors.

    float32 4; bfloat16/float16 2; fp8 (e4m3/e5m2, incl. fnuz)/int8/uint8 1; also int32, int64,
    float64. "auto" is rejected (resolve it from the model config first), and packed or
    block-scaled formats (int4, nf4, mxfp4, nvfp4) are rejected: use get_format(...).bytes_per_param.
    """
    key = _normalize(name, "dtype")
    bare = key.removeprefix("torch.")
    if bare == "auto":
        raise PlannerError("dtype 'auto' has no size; resolve it from the model config's torch_dtype first")
    if bare in _OTHER_STORAGE_BITS:
        return _OTHER_STORAGE_BITS[bare] // 8
    canonical = ALIASES.get(key) or ALIASES.get(bare)
    if canonical in _STORAGE_FORMATS:
        return FORMATS[canonical].bits // 8
    if canonical is not None:
        raise PlannerError(
            f"{name!r} is a packed/quantized format, not a tensor dtype; use get_format({canonical!r}).bytes_per_param"
        )
    raise PlannerError(
        f"unknown dtype {name!r}; use one of float32, bfloat16, float16, float8_e4m3fn, float8_e5m2, "
        f"int8, uint8, int32, int64, float64 (a 'torch.' prefix is fine)"
    )


def __getattr__(name: str) -> Any:
    """`formats_table` (planner/dtypes_table.py) kept importable from here, loaded when asked for."""
    if name == "formats_table":
        from planner.dtypes_table import formats_table

        return formats_table
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
