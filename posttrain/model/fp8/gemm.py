"""Block-scaled FP8 GEMM and the choice of backend that runs the FP8 Linear.

The GEMM contract, shared by every backend: `out[M, N] = sum over K-blocks kb of (a_kb @ b_kb^T) * sa[m, kb] *
sb[n, kb]`, accumulated in FP32 with the per-tile scales applied every 128 elements of K (DeepSeek-V3's
promotion). `a` is always quantized 1x128; `b` is 128x128 blocks (Fprop, Dgrad) or 1x128 rows (Wgrad). The
reference runs that sum literally in torch; the GPU backends (Triton kernels, cuBLAS through
`torch.nn.functional.scaled_mm`) must agree with it. `get_ops` turns a backend name and a device into the object
that quantizes and multiplies; availability errors name the fix.
"""

from __future__ import annotations

import functools
import warnings
from typing import Protocol

import torch

from posttrain.model.fp8 import quant
from posttrain.model.fp8.quant import TILE, ScaleMode

BACKENDS: tuple[str, ...] = ("auto", "reference", "triton", "scaled_mm")
GPU_SELF_CHECK_TOL = 1e-3


def calc_diff(x: torch.Tensor, y: torch.Tensor) -> float:
    """DeepGEMM's similarity measure `1 - 2 sum(xy) / sum(x^2 + y^2)` in FP64: 0 when equal, ~rel_err^2 / 2."""
    x, y = x.detach().double(), y.detach().double()
    denominator = (x * x + y * y).sum()
    if denominator == 0:
        return 0.0
    return float(1 - 2 * (x * y).sum() / denominator)


def expand_b_scale(b_s: torch.Tensor, n: int) -> torch.Tensor:
    """Per-row scales [N, K/128] from either 1x128 scales [N, K/128] or 128x128 scales [N/128, K/128]."""
    if b_s.shape[0] == n:
        return b_s
    assert b_s.shape[0] * TILE == n, f"b scale rows {b_s.shape[0]} fit neither N={n} nor N/128"
    return b_s.repeat_interleave(TILE, dim=0)


def gemm_reference(
    a_q: torch.Tensor,
    a_s: torch.Tensor,
    b_q: torch.Tensor,
    b_s: torch.Tensor,
    out_dtype: torch.dtype = torch.float32,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Blockwise FP8 GEMM with FP32 promotion every 128 elements of K (the ground truth).

    Args:
        a_q: [M, K] float8_e4m3fn, K a multiple of 128. a_s: [M, K/128] FP32 (1x128 tiles).
        b_q: [N, K] float8_e4m3fn. b_s: [N/128, K/128] (128x128 blocks) or [N, K/128] (1x128 rows), FP32.
        out_dtype: dtype of the result; the sum and the bias add stay FP32 until this final cast.
        bias: optional [N] added in FP32.

    Returns:
        [M, N] tensor of out_dtype.
    """
    (m, k), n = a_q.shape, b_q.shape[0]
    assert b_q.shape[1] == k and k % TILE == 0, f"bad GEMM shapes a={tuple(a_q.shape)} b={tuple(b_q.shape)}"
    assert a_s.shape == (m, k // TILE), f"a scale shape {tuple(a_s.shape)} != {(m, k // TILE)}"
    sb_NKb = expand_b_scale(b_s, n).float()
    sa_MKb = a_s.float()
    out_MN = torch.zeros(m, n, dtype=torch.float32, device=a_q.device)
    for kb in range(k // TILE):
        cols = slice(kb * TILE, (kb + 1) * TILE)
        partial_MN = (
            quant.fp8_to_float32(a_q[:, cols].contiguous()) @ quant.fp8_to_float32(b_q[:, cols].contiguous()).t()
        )
        out_MN += partial_MN * sa_MKb[:, kb, None] * sb_NKb[None, :, kb]
    if bias is not None:
        out_MN += bias.float()
    return out_MN.to(out_dtype)


class Fp8Ops(Protocol):
    """What the FP8 Linear needs from a backend. All outputs are zero-padded to multiples of 128 as noted."""

    name: str

    def quantize_1x128(self, x_MK: torch.Tensor, scale: ScaleMode) -> tuple[torch.Tensor, torch.Tensor]:
        """[M, K] -> q [M, Kp], s [M, Kp/128]."""
        ...

    def quantize_1x128_t(
        self, x_MK: torch.Tensor, scale: ScaleMode, x_scale: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[M, K] -> q [Kp, Mp], s [Kp, Mp/128] (128x1 tiles of x, stored transposed); x_scale: re-tile FP8 x."""
        ...

    def quantize_128x128(
        self, w_NK: torch.Tensor, scale: ScaleMode, with_t: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """[N, K] -> q [Np, Kp], s [Np/128, Kp/128], and q^T [Kp, Np] contiguous when with_t."""
        ...

    def gemm(
        self,
        a_q: torch.Tensor,
        a_s: torch.Tensor,
        b_q: torch.Tensor,
        b_s: torch.Tensor,
        out_dtype: torch.dtype,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """See `gemm_reference`."""
        ...


def gemm_dequantized(
    a_q: torch.Tensor,
    a_s: torch.Tensor,
    b_q: torch.Tensor,
    b_s: torch.Tensor,
    out_dtype: torch.dtype = torch.float32,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """The same product as `gemm_reference` as one FP32 matmul of the dequantized operands (same arguments).

    Scaling each K block before multiplying is the same math as promoting after it; with power-of-two scales
    the dequantized values are exact in FP32, so only the FP32 summation order differs (~1e-7 relative).
    Several times faster on CPU than the per-block loop, which is why the reference backend trains with it.
    """
    (m, k), n = a_q.shape, b_q.shape[0]
    assert b_q.shape[1] == k and k % TILE == 0, f"bad GEMM shapes a={tuple(a_q.shape)} b={tuple(b_q.shape)}"
    a_MK = (quant.fp8_to_float32(a_q).view(m, k // TILE, TILE) * a_s.float()[:, :, None]).view(m, k)
    b_NK = (quant.fp8_to_float32(b_q).view(n, k // TILE, TILE) * expand_b_scale(b_s, n).float()[:, :, None]).view(n, k)
    out_MN = a_MK @ b_NK.t() if bias is None else torch.addmm(bias.float(), a_MK, b_NK.t())
    return out_MN.to(out_dtype)


class ReferenceOps:
    """Pure torch on any device: quant.py for the tiles, `gemm_dequantized` for the product."""

    name = "reference"

    def quantize_1x128(self, x_MK: torch.Tensor, scale: ScaleMode) -> tuple[torch.Tensor, torch.Tensor]:
        return quant.quantize_1x128(x_MK, scale)

    def quantize_1x128_t(
        self, x_MK: torch.Tensor, scale: ScaleMode, x_scale: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return quant.quantize_1x128_t(x_MK, scale, x_scale)

    def quantize_128x128(
        self, w_NK: torch.Tensor, scale: ScaleMode, with_t: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        q, s = quant.quantize_128x128(w_NK, scale)
        return q, s, (q.t().contiguous() if with_t else None)

    def gemm(self, a_q, a_s, b_q, b_s, out_dtype, bias=None):
        return gemm_dequantized(a_q, a_s, b_q, b_s, out_dtype, bias)


def _pad_scale_cols(s: torch.Tensor, multiple: int) -> torch.Tensor:
    cols = quant.round_up(s.shape[1], multiple)
    return torch.nn.functional.pad(s, (0, cols - s.shape[1])) if cols != s.shape[1] else s


class ScaledMmOps:
    """Triton quantization + cuBLAS blockwise GEMM through `torch.nn.functional.scaled_mm` (SM90 only).

    cuBLAS reads scales in fixed layouts: 1x128 scales [M, K/128] with strides (1, M) ("outer-dim major"), and
    128x128 scales of b as the transpose of a [N/128, L4] contiguous tensor, L4 = K/128 rounded up to 4.
    """

    name = "scaled_mm"

    def __init__(self) -> None:
        from posttrain.model.fp8 import triton_kernels

        self._triton = triton_kernels.TritonOps()
        self.quantize_1x128 = self._triton.quantize_1x128
        self.quantize_1x128_t = self._triton.quantize_1x128_t
        self.quantize_128x128 = self._triton.quantize_128x128

    def gemm(self, a_q, a_s, b_q, b_s, out_dtype, bias=None):
        from torch.nn.functional import ScalingType, scaled_mm

        m, n = a_q.shape[0], b_q.shape[0]
        m_pad = quant.round_up(max(m, 1))
        a_q = quant.pad_2d(a_q, m_pad, a_q.shape[1])
        sa = quant.pad_2d(a_s.float(), m_pad, a_s.shape[1]).t().contiguous().t()
        if b_s.shape[0] == n:
            recipe_b, sb = ScalingType.BlockWise1x128, b_s.float().t().contiguous().t()
        else:
            recipe_b, sb = ScalingType.BlockWise128x128, _pad_scale_cols(b_s.float(), 4).contiguous().t()
        gemm_dtype = torch.float32 if bias is not None else out_dtype
        out_MN = scaled_mm(
            a_q, b_q.t(), sa, ScalingType.BlockWise1x128, sb, recipe_b, output_dtype=gemm_dtype, use_fast_accum=False
        )[:m]
        if bias is not None:
            out_MN = (out_MN + bias.float()).to(out_dtype)
        return out_MN


def _gpu_unavailable_reason(backend: str, device: torch.device | None) -> str | None:
    """Why `backend` cannot run on `device` (None when it can)."""
    if not torch.cuda.is_available():
        return f"backend {backend!r} needs CUDA; use backend='reference' (CPU emulation) or 'auto'"
    if device is not None and device.type != "cuda":
        return (
            f"backend {backend!r} runs on CUDA tensors but got a {device.type} tensor; move the model to CUDA or "
            "use backend='reference' (CPU emulation) or 'auto'"
        )
    try:
        import triton  # noqa: F401
    except ImportError:
        return f"backend {backend!r} needs the triton package (pip install triton); use backend='reference' or 'auto'"
    capability = torch.cuda.get_device_capability(device)
    if capability < (8, 9):
        return (
            f"backend {backend!r} needs an FP8 GPU (compute capability >= 8.9, found {capability[0]}.{capability[1]});"
            " use backend='reference' (emulation) or 'auto'"
        )
    if backend == "scaled_mm" and capability != (9, 0):
        return (
            f"backend 'scaled_mm' (cuBLAS blockwise) needs an SM90 GPU (H100/H200), found "
            f"{capability[0]}.{capability[1]}; use backend='triton' or 'auto'"
        )
    return None


def check_backend(backend: str, device: torch.device | None = None) -> None:
    """Raise ValueError when `backend` is unknown or cannot run here (on `device` when given)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not an FP8 backend; use one of {BACKENDS}")
    if backend in ("triton", "scaled_mm"):
        reason = _gpu_unavailable_reason(backend, device)
        if reason:
            raise ValueError(reason)


def _self_check(ops: Fp8Ops, device: torch.device) -> float:
    """Largest relative error of `ops.gemm` against the reference on a small random problem, both b layouts."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    worst = 0.0
    for b_rows in (384, 256):
        a = torch.randn(256, 512, generator=gen).to(device)
        b = torch.randn(b_rows, 512, generator=gen).to(device)
        a_q, a_s = quant.quantize_1x128(a)
        b_q, b_s = quant.quantize_128x128(b) if b_rows == 384 else quant.quantize_1x128(b)
        ref = gemm_reference(a_q, a_s, b_q, b_s)
        got = ops.gemm(a_q, a_s, b_q, b_s, torch.float32)
        worst = max(worst, float((got - ref).norm() / ref.norm()))
    return worst


@functools.cache
def _gpu_ops(backend: str, device_index: int) -> Fp8Ops:
    from posttrain.model.fp8 import triton_kernels

    ops = ScaledMmOps() if backend == "scaled_mm" else triton_kernels.TritonOps()
    with torch.no_grad(), torch.autocast("cuda", enabled=False):  # first use may happen inside autocast
        error = _self_check(ops, torch.device("cuda", device_index))
    if error > GPU_SELF_CHECK_TOL:
        raise RuntimeError(f"FP8 backend {backend!r} disagrees with the reference GEMM (rel. error {error:.2e})")
    return ops


@functools.cache
def _auto_ops(device_type: str, device_index: int | None) -> Fp8Ops:
    device = torch.device(device_type, device_index)
    if device_type != "cuda" or _gpu_unavailable_reason("triton", device):
        if device_type == "cuda":
            reason = _gpu_unavailable_reason("triton", device)
            warnings.warn(f"FP8: {reason}; running the reference emulation", stacklevel=3)
        return ReferenceOps()
    order = ("scaled_mm", "triton") if not _gpu_unavailable_reason("scaled_mm", device) else ("triton",)
    for backend in order:
        try:
            return _gpu_ops(backend, device.index or 0)
        except Exception as error:  # a broken cuBLAS/Triton build must not stop training: fall back loudly
            warnings.warn(f"FP8: backend {backend!r} failed its self-check ({error}); trying the next", stacklevel=3)
    return ReferenceOps()


def get_ops(backend: str, device: torch.device) -> Fp8Ops:
    """The ops object for `backend` on `device`; 'auto' picks the GPU path on FP8 GPUs, else the reference.

    Raises:
        ValueError: unknown backend, or a GPU backend asked for where it cannot run (the message names the fix).
    """
    if backend == "reference":
        return ReferenceOps()
    if backend == "auto":
        return _auto_ops(device.type, device.index if device.type == "cuda" else None)
    return _checked_gpu_ops(backend, device.type, device.index)


@functools.cache
def _checked_gpu_ops(backend: str, device_type: str, device_index: int | None) -> Fp8Ops:
    # Cached: the FP8 Linear asks on every call. Errors are not cached, so they repeat until fixed.
    check_backend(backend, torch.device(device_type, device_index))
    return _gpu_ops(backend, device_index if device_index is not None else torch.cuda.current_device())
