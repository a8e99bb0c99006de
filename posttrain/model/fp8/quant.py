"""Reference FP8 (E4M3) quantization: the ground truth every other backend is checked against.

A tensor is cut into tiles (1x128 for activations and gradients, 128x128 for weights, 128x1 when an activation
is re-tiled for the weight gradient). Each tile gets one scale `s = max(amax, 1e-12) / 448`, rounded up to a
power of two by default, and stores `q = saturate(x / s)` as `float8_e4m3fn`, so that `x ~ q * s`. All arithmetic
happens in FP32 before the cast: CPU float8 tensors support casts, `mm`, `view` and indexing, not `amax` or
`clamp`. Pure torch; it runs on CPU and CUDA alike. See DESIGN.md beside this file for the layout rules.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = 448.0
AMAX_FLOOR = 1e-12
TILE = 128

ScaleMode = Literal["pow2", "fp32"]
SCALE_MODES: tuple[str, ...] = ("pow2", "fp32")

_EXPONENT_MASK = 0x7F800000
_MANTISSA_MASK = 0x007FFFFF
_EXPONENT_ONE = 0x00800000


def check_scale_mode(scale: str) -> None:
    """Raise ValueError unless `scale` is one of SCALE_MODES."""
    if scale not in SCALE_MODES:
        raise ValueError(f"scale={scale!r} is not a scale mode; use one of {SCALE_MODES} ('pow2' is the default)")


def round_up(value: int, multiple: int = TILE) -> int:
    """Smallest multiple of `multiple` that is >= value."""
    return -(-value // multiple) * multiple


def ceil_pow2(s: torch.Tensor) -> torch.Tensor:
    """Round positive normal FP32 values up to the next power of two (exact powers of two stay).

    Done on the bits rather than with `exp2(ceil(log2(s)))`: `log2` rounds values just above a power of two
    down onto it, which would give a scale too small for the tile. The Triton kernels use the same bit rule.
    """
    assert s.dtype == torch.float32
    bits = s.view(torch.int32)
    rounded = torch.where((bits & _MANTISSA_MASK) == 0, bits, (bits & _EXPONENT_MASK) + _EXPONENT_ONE)
    return rounded.view(torch.float32)


def scale_from_amax(amax: torch.Tensor, scale: ScaleMode = "pow2") -> torch.Tensor:
    """Per-tile decode scale `s` from per-tile max-abs values (FP32): `x ~ q * s`."""
    s = amax.float().clamp(min=AMAX_FLOOR) / FP8_MAX
    return ceil_pow2(s) if scale == "pow2" else s


def _tiles_view(x: torch.Tensor, tile_rows: int, tile_cols: int) -> torch.Tensor:
    rows, cols = x.shape
    return x.reshape(rows // tile_rows, tile_rows, cols // tile_cols, tile_cols)


def quantize_tiles(
    x: torch.Tensor, tile_rows: int, tile_cols: int, scale: ScaleMode = "pow2"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize a 2-D tensor in tiles of tile_rows x tile_cols.

    Args:
        x: [R, C] float tensor, R divisible by tile_rows and C by tile_cols (see `pad_2d`).
        tile_rows, tile_cols: tile shape, e.g. (1, 128), (128, 1) or (128, 128).
        scale: "pow2" (default) or "fp32" scales.

    Returns:
        q: [R, C] float8_e4m3fn; s: [R // tile_rows, C // tile_cols] FP32 decode scales.
    """
    check_scale_mode(scale)
    if x.dim() != 2:
        raise ValueError(f"expected a 2-D tensor, got shape {tuple(x.shape)}; reshape to [-1, last_dim] first")
    rows, cols = x.shape
    if rows % tile_rows or cols % tile_cols:
        raise ValueError(
            f"shape {tuple(x.shape)} is not a multiple of the {tile_rows}x{tile_cols} tile; zero-pad it first "
            "with posttrain.model.fp8.quant.pad_2d (zero padding is exact)"
        )
    x_tiles = _tiles_view(x.float(), tile_rows, tile_cols)
    # Reduce only over the tile dims longer than 1: the same result, much faster on CPU.
    amax = x_tiles.abs()
    for dim in (3, 1):
        amax = amax.amax(dim=dim, keepdim=True) if amax.shape[dim] > 1 else amax
    s = scale_from_amax(amax[:, 0, :, 0], scale)
    y_tiles = x_tiles / s[:, None, :, None]
    q_tiles = y_tiles.clamp_(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    return q_tiles.reshape(rows, cols), s


def fp8_to_float32(q: torch.Tensor) -> torch.Tensor:
    """Exact E4M3 -> FP32 by moving bits (several times faster on CPU than `q.float()`).

    The 7 exponent+mantissa bits land at the top of an FP32 mantissa and exponent, which reads as the E4M3
    value times 2^-120 (subnormals included); one exact multiply by 2^120 fixes the bias. The two NaN codes
    decode as +-480; the quantizers here never write them unless the tile's scale is itself NaN or inf, which
    then propagates through `q * s`.
    """
    assert q.dtype == FP8_DTYPE
    u = q.view(torch.uint8).to(torch.int32)
    sign = (u & 0x80) << 24
    u &= 0x7F
    u <<= 20
    u |= sign
    return u.view(torch.float32).mul_(2.0**120)


def dequantize_tiles(q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Inverse of `quantize_tiles`: FP32 `q * s`, the tile shape read off the scale's shape.

    Args:
        q: [R, C] float8_e4m3fn. s: [R // tile_rows, C // tile_cols] FP32.
    Returns:
        [R, C] FP32.
    """
    rows, cols = q.shape
    tile_rows, tile_cols = rows // s.shape[0], cols // s.shape[1]
    assert tile_rows * s.shape[0] == rows and tile_cols * s.shape[1] == cols, "scale shape does not tile q"
    x_tiles = _tiles_view(fp8_to_float32(q), tile_rows, tile_cols) * s.float()[:, None, :, None]
    return x_tiles.reshape(rows, cols)


def pad_2d(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Zero-pad a [R, C] tensor at the bottom and right to [rows, cols]; returns x itself when nothing to pad."""
    if x.shape[0] == rows and x.shape[1] == cols:
        return x
    assert rows >= x.shape[0] and cols >= x.shape[1]
    return F.pad(x, (0, cols - x.shape[1], 0, rows - x.shape[0]))


def quantize_1x128(x_MK: torch.Tensor, scale: ScaleMode = "pow2") -> tuple[torch.Tensor, torch.Tensor]:
    """Activation / gradient tiles along the reduction dim: [M, K] -> q [M, Kp], s [M, Kp/128] (K zero-padded)."""
    x_MK = pad_2d(x_MK, x_MK.shape[0], round_up(x_MK.shape[1]))
    return quantize_tiles(x_MK, 1, TILE, scale)


def quantize_128x1(x_MK: torch.Tensor, scale: ScaleMode = "pow2") -> tuple[torch.Tensor, torch.Tensor]:
    """Tiles of 128 rows by 1 column: [M, K] -> q [Mp, K], s [Mp/128, K] (M zero-padded)."""
    x_MK = pad_2d(x_MK, round_up(x_MK.shape[0]), x_MK.shape[1])
    return quantize_tiles(x_MK, TILE, 1, scale)


def quantize_128x128(w_NK: torch.Tensor, scale: ScaleMode = "pow2") -> tuple[torch.Tensor, torch.Tensor]:
    """Weight blocks: [N, K] -> q [Np, Kp], s [Np/128, Kp/128] (both dims zero-padded)."""
    w_NK = pad_2d(w_NK, round_up(w_NK.shape[0]), round_up(w_NK.shape[1]))
    return quantize_tiles(w_NK, TILE, TILE, scale)


def quantize_1x128_t(
    x_MK: torch.Tensor, scale: ScaleMode = "pow2", x_scale: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """128x1 tiles of x, written transposed, i.e. 1x128 tiles of x^T: [M, K] -> q [Kp, Mp], s [Kp, Mp/128].

    This is the Wgrad operand layout (reduction over tokens M, contiguous along M). With `x_scale` given, x is
    an FP8 tensor quantized 1x128 ([M, Kx] with scales [M, Kx/128]) that is first dequantized: the re-tiling of
    a cached FP8 activation, exact up to ~1e-8 with power-of-two scales.
    """
    x = x_MK if x_scale is None else dequantize_tiles(x_MK, x_scale)
    x_KM = pad_2d(x.float().t(), round_up(x.shape[1]), round_up(x.shape[0]))
    return quantize_tiles(x_KM, 1, TILE, scale)
