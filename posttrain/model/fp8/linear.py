"""The FP8 Linear: all three GEMMs of `y = x W^T + b` in E4M3 with FP32 accumulation (DeepSeek-V3 recipe).

Fprop   y[M, N]  = x[M, K] (1x128 tiles)          @ W[N, K]^T (128x128 blocks)
Dgrad   dx[M, K] = dy[M, N] (1x128 tiles)         @ W^T[K, N]^T (the same blocks, transposed)
Wgrad   dW[N, K] = dy^T[N, M] (1x128 along M)     @ x^T[K, M]^T (the cached FP8 x, re-tiled 128x1)

Gradients are only ever tiled 1x128 (never per 128x128 block), the weight stays an FP32 master parameter, the
bias is added in FP32 and its gradient is a plain FP32 sum. Dimensions that are not multiples of 128 are
zero-padded inside the backend calls, which is exact: zeros change no tile's max and add nothing to a dot
product. The module keeps `nn.Linear`'s parameters (`weight` [N, K], `bias` [N]), so state dicts, optimizers and
`save_pretrained` see an ordinary Linear.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from posttrain.model.fp8.gemm import Fp8Ops, check_backend, get_ops
from posttrain.model.fp8.quant import ScaleMode, check_scale_mode


def _fprop(
    ops: Fp8Ops,
    x_MK: torch.Tensor,
    w_NK: torch.Tensor,
    bias_N: torch.Tensor | None,
    scale: ScaleMode,
    out_dtype: torch.dtype,
    keep_w_t: bool,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Forward GEMM; returns y [M, N] and what backward needs: (q_x, s_x, q_wT or None, s_w)."""
    n = w_NK.shape[0]
    q_x, s_x = ops.quantize_1x128(x_MK, scale)
    q_w, s_w, q_wT = ops.quantize_128x128(w_NK, scale, keep_w_t)
    bias_Np = None if bias_N is None else F.pad(bias_N.float(), (0, q_w.shape[0] - n))
    y_MN = ops.gemm(q_x, s_x, q_w, s_w, out_dtype, bias_Np)
    if y_MN.shape[1] != n:
        y_MN = y_MN[:, :n].contiguous()
    return y_MN, (q_x, s_x, q_wT, s_w)


class _Fp8LinearFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_MK, w_NK, bias_N, ops, scale, out_dtype):
        needs_dx, needs_dw = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        y_MN, (q_x, s_x, q_wT, s_w) = _fprop(ops, x_MK, w_NK, bias_N, scale, out_dtype, keep_w_t=needs_dx)
        # Wgrad re-tiles the cached FP8 x: exact with power-of-two scales, but a second full rounding with FP32
        # scales, so that mode keeps the input itself.
        fp8_x = needs_dw and scale == "pow2"
        ctx.save_for_backward(
            q_x if fp8_x else None,
            s_x if fp8_x else None,
            x_MK if needs_dw and not fp8_x else None,
            q_wT,
            s_w if needs_dx else None,
        )
        ctx.ops, ctx.scale = ops, scale
        ctx.x_dtype, ctx.w_dtype = x_MK.dtype, w_NK.dtype
        ctx.bias_dtype = None if bias_N is None else bias_N.dtype
        ctx.k, ctx.n = x_MK.shape[1], w_NK.shape[0]
        return y_MN

    @staticmethod
    def backward(ctx, dy_MN):
        q_x, s_x, x_hp, q_wT, s_w = ctx.saved_tensors
        ops, scale, k, n = ctx.ops, ctx.scale, ctx.k, ctx.n
        dx_MK = dw_NK = db_N = None
        with torch.autocast(dy_MN.device.type, enabled=False):
            if ctx.needs_input_grad[0]:
                q_dy, s_dy = ops.quantize_1x128(dy_MN, scale)
                dx_MK = ops.gemm(q_dy, s_dy, q_wT, s_w.t(), ctx.x_dtype)
                dx_MK = dx_MK[:, :k] if dx_MK.shape[1] != k else dx_MK
            if ctx.needs_input_grad[1]:
                q_dyT, s_dyT = ops.quantize_1x128_t(dy_MN, scale)
                if x_hp is None:
                    q_xT, s_xT = ops.quantize_1x128_t(q_x, scale, x_scale=s_x)
                else:
                    q_xT, s_xT = ops.quantize_1x128_t(x_hp, scale)
                dw_NK = ops.gemm(q_dyT, s_dyT, q_xT, s_xT, torch.float32)
                dw_NK = dw_NK[:n, :k].contiguous().to(ctx.w_dtype)
            if ctx.needs_input_grad[2]:
                db_N = dy_MN.float().sum(0).to(ctx.bias_dtype)
        return dx_MK, dw_NK, db_N, None, None, None


def _output_dtype(x: torch.Tensor) -> torch.dtype:
    """Like nn.Linear: the autocast dtype when autocast is on for x's device, else x's own dtype."""
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return x.dtype


def fp8_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    backend: str = "auto",
    scale: ScaleMode = "pow2",
) -> torch.Tensor:
    """FP8 counterpart of `F.linear` with an FP8 backward.

    Args:
        x: [..., K] floating tensor (FP32, BF16 or FP16), any leading shape.
        weight: [N, K] (the FP32 master weight). bias: optional [N], added in FP32.
        backend: "auto", "reference", "triton" or "scaled_mm" (see gemm.get_ops).
        scale: "pow2" (default) or "fp32" tile scales.

    Returns:
        [..., N] in x's dtype (the autocast dtype when autocast is on). Under `torch.no_grad()` nothing is saved.
    """
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(f"input's last dim is {x.shape[-1]} but the weight expects K={weight.shape[1]}")
    if not x.is_floating_point():
        raise ValueError(f"FP8 Linear needs a floating-point input, got {x.dtype}")
    out_dtype = _output_dtype(x)
    ops = get_ops(backend, x.device)
    x_MK = x.reshape(-1, x.shape[-1])
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias))
    with torch.autocast(x.device.type, enabled=False):
        if needs_grad:
            y_MN = _Fp8LinearFunction.apply(x_MK, weight, bias, ops, scale, out_dtype)
        else:
            y_MN, _ = _fprop(ops, x_MK, weight, bias, scale, out_dtype, keep_w_t=False)
    return y_MN.reshape(*x.shape[:-1], weight.shape[0])


class Fp8Linear(nn.Linear):
    """Drop-in `nn.Linear` whose forward and backward GEMMs run in FP8 (same parameters, same state dict)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        backend: str = "auto",
        scale: ScaleMode = "pow2",
    ) -> None:
        check_backend(backend)
        check_scale_mode(scale)
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.backend = backend
        self.scale = scale
        # False runs the plain high-precision matmul: `high_precision(model)` uses it to keep generation out of FP8.
        self.fp8_enabled = True

    @classmethod
    def from_linear(cls, linear: nn.Linear, backend: str = "auto", scale: ScaleMode = "pow2") -> Fp8Linear:
        """Wrap an existing Linear, sharing its Parameter objects (optimizers built before keep working)."""
        with torch.device("meta"):
            new = cls(linear.in_features, linear.out_features, linear.bias is not None, backend=backend, scale=scale)
        new.weight = linear.weight
        new.bias = linear.bias
        new.train(linear.training)
        return new

    def to_linear(self) -> nn.Linear:
        """A plain nn.Linear sharing this module's parameters."""
        with torch.device("meta"):
            linear = nn.Linear(self.in_features, self.out_features, self.bias is not None)
        linear.weight = self.weight
        linear.bias = self.bias
        linear.train(self.training)
        return linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fp8_enabled:
            return super().forward(x)
        return fp8_linear(x, self.weight, self.bias, backend=self.backend, scale=self.scale)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, backend={self.backend}, scale={self.scale}"
