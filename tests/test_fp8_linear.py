"""The FP8 Linear on CPU (reference backend): output, dX and dW against FP32 autograd (calc_diff < 1e-3 each),
exact zero padding, leading shapes and dtypes, no_grad inference, autocast, and the rule that gradients are
never quantized per 128x128 block."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from posttrain.model.fp8 import Fp8Linear, calc_diff, fp8_linear
from posttrain.model.fp8.gemm import ReferenceOps
from posttrain.model.fp8.linear import _Fp8LinearFunction

pytestmark = pytest.mark.usefixtures("one_thread")


def _bits(t: torch.Tensor) -> torch.Tensor:
    """A view that torch.equal can compare bit for bit (float8 tensors support no comparison on CPU)."""
    return t.view(torch.uint8) if t.dtype == torch.float8_e4m3fn else t


def _grads(layer: nn.Module, x: torch.Tensor, dy: torch.Tensor) -> tuple[torch.Tensor, ...]:
    x = x.detach().clone().requires_grad_(True)
    layer.zero_grad(set_to_none=True)
    y = layer(x)
    y.backward(dy)
    return y.detach(), x.grad, layer.weight.grad.clone(), layer.bias.grad.clone()


@pytest.mark.parametrize("scale", ["pow2", "fp32"])
@pytest.mark.parametrize(("m", "k", "n"), [(256, 512, 384), (100, 576, 192)])
def test_out_dx_dw_vs_fp32_autograd(scale, m, k, n):
    gen = torch.Generator().manual_seed(0)
    linear = nn.Linear(k, n)
    x, dy = torch.randn(m, k, generator=gen), torch.randn(m, n, generator=gen)
    expected = _grads(linear, x, dy)
    got = _grads(Fp8Linear.from_linear(linear, backend="reference", scale=scale), x, dy)
    for name, g, e in zip(("out", "dX", "dW"), got, expected):
        assert calc_diff(g, e) < 1e-3, (name, calc_diff(g, e))  # measured 6.3e-4 .. 7.7e-4
    assert torch.allclose(got[3], expected[3], rtol=1e-5, atol=1e-5), "bias grad is a plain FP32 sum"


def test_zero_padding_changes_nothing_beyond_quantization():
    """K=576, N=192, M=100 (SmolLM2's k_proj) against the same layer zero-padded by hand to 640 x 256: the FP8
    operands are bit-identical, so out, dX and dW agree up to FP32 summation order (bit-identical here)."""
    gen = torch.Generator().manual_seed(1)
    m, k, n, kp, np_ = 100, 576, 192, 640, 256
    linear = nn.Linear(k, n)
    padded = nn.Linear(kp, np_)
    with torch.no_grad():
        padded.weight.zero_()
        padded.bias.zero_()
        padded.weight[:n, :k] = linear.weight
        padded.bias[:n] = linear.bias
    x, dy = torch.randn(m, k, generator=gen), torch.randn(m, n, generator=gen)
    x_pad = torch.cat([x, torch.zeros(m, kp - k)], dim=1)
    dy_pad = torch.cat([dy, torch.zeros(m, np_ - n)], dim=1)
    ops = ReferenceOps()
    for implicit, explicit in [
        (ops.quantize_1x128(x, "pow2"), ops.quantize_1x128(x_pad, "pow2")),
        (ops.quantize_128x128(linear.weight, "pow2", True), ops.quantize_128x128(padded.weight, "pow2", True)),
        (ops.quantize_1x128_t(dy, "pow2"), ops.quantize_1x128_t(dy_pad, "pow2")),
    ]:
        for a, b in zip(implicit, explicit):
            assert torch.equal(_bits(a), _bits(b))
    y, dx, dw, db = _grads(Fp8Linear.from_linear(linear, backend="reference"), x, dy)
    y_p, dx_p, dw_p, db_p = _grads(Fp8Linear.from_linear(padded, backend="reference"), x_pad, dy_pad)
    assert torch.equal(y_p[:, n:], torch.zeros(m, np_ - n)) and torch.equal(dw_p[n:], torch.zeros(np_ - n, kp))
    for got, want in [(y, y_p[:, :n]), (dx, dx_p[:, :k]), (dw, dw_p[:n, :k]), (db, db_p[:n])]:
        assert float((got - want).norm() / want.norm()) <= 1e-6


def test_leading_shapes_and_bf16():
    layer = Fp8Linear(256, 128, backend="reference")
    x = torch.randn(2, 3, 5, 256, dtype=torch.bfloat16, requires_grad=True)
    y = layer(x)
    assert y.shape == (2, 3, 5, 128) and y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert x.grad.dtype == torch.bfloat16 and x.grad.shape == x.shape
    assert layer.weight.grad.dtype == torch.float32 and layer.bias.grad.dtype == torch.float32
    flat = layer(x.detach().reshape(30, 256))
    assert torch.equal(flat.reshape(2, 3, 5, 128), y.detach())


def test_no_grad_matches_training_forward_bit_for_bit():
    """GRPO's old/reference log-probs run the same FP8 forward as training, under no_grad."""
    layer = Fp8Linear(384, 256, backend="reference")
    x = torch.randn(7, 384, requires_grad=True)
    with torch.no_grad():
        y_infer = layer(x)
    assert y_infer.grad_fn is None
    assert torch.equal(y_infer, layer(x).detach())


def test_autocast_gives_the_autocast_dtype_and_fp32_math():
    layer = Fp8Linear(256, 256, backend="reference")
    x = torch.randn(16, 256)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16
    assert torch.equal(y, layer(x).bfloat16()), "autocast must not lower the FP32 accumulation"


def test_frozen_weight_no_bias_and_no_input_grad():
    layer = Fp8Linear(256, 128, bias=False, backend="reference")
    layer.weight.requires_grad_(False)
    x = torch.randn(8, 256, requires_grad=True)
    layer(x).sum().backward()
    assert x.grad is not None and layer.weight.grad is None
    layer.weight.requires_grad_(True)
    layer(torch.randn(8, 256)).sum().backward()
    assert layer.weight.grad is not None


class _RecordingOps(ReferenceOps):
    """The reference backend, recording which tiling each quantizer call used."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def quantize_1x128(self, x_MK, scale):
        self.calls.append(("1x128", x_MK.data_ptr()))
        return super().quantize_1x128(x_MK, scale)

    def quantize_1x128_t(self, x_MK, scale, x_scale=None):
        self.calls.append(("128x1", x_MK.data_ptr()))
        return super().quantize_1x128_t(x_MK, scale, x_scale)

    def quantize_128x128(self, w_NK, scale, with_t):
        self.calls.append(("128x128", w_NK.data_ptr()))
        return super().quantize_128x128(w_NK, scale, with_t)


def test_gradients_are_never_quantized_per_128x128_block():
    ops = _RecordingOps()
    weight = torch.randn(256, 384, requires_grad=True)
    x = torch.randn(64, 384, requires_grad=True)
    y = _Fp8LinearFunction.apply(x, weight, None, ops, "pow2", torch.float32)
    dy = torch.randn(64, 256)
    y.backward(dy)
    blocks = [ptr for kind, ptr in ops.calls if kind == "128x128"]
    assert blocks == [weight.data_ptr()], "only the weight may use 128x128 blocks"
    assert [kind for kind, _ in ops.calls] == ["1x128", "128x128", "1x128", "128x1", "128x1"]


def test_functional_and_module_errors():
    with pytest.raises(ValueError, match="last dim is 100"):
        fp8_linear(torch.randn(4, 100), torch.randn(8, 128))
    with pytest.raises(ValueError, match="not an FP8 backend"):
        Fp8Linear(128, 128, backend="fast")
    with pytest.raises(ValueError, match="scale mode"):
        Fp8Linear(128, 128, scale="e8m0")
    layer = Fp8Linear(128, 64, backend="reference")
    assert "backend=reference, scale=pow2" in repr(layer)
    assert torch.equal(layer(torch.randn(0, 128)), torch.zeros(0, 64))
