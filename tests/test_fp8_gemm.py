"""FP8 GEMM acceptance rows (FP8.md) on CPU: block-scaled GEMM against FP32 on unquantized inputs
(calc_diff < 1e-3), the per-128-K promotion against the dequantized single matmul, and backend selection errors."""

from __future__ import annotations

import pytest
import torch

from posttrain.model.fp8 import BACKENDS, calc_diff, check_backend, gemm_reference, get_ops
from posttrain.model.fp8.gemm import ReferenceOps, gemm_dequantized
from posttrain.model.fp8.quant import quantize_1x128, quantize_128x128

pytestmark = pytest.mark.usefixtures("one_thread")


def _operands(m: int, n: int, k: int, b_tiles: str, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    a, b = torch.randn(m, k, generator=gen), torch.randn(n, k, generator=gen)
    b_q, b_s = quantize_128x128(b) if b_tiles == "128x128" else quantize_1x128(b)
    return a, b, (*quantize_1x128(a), b_q, b_s)


@pytest.mark.parametrize("b_tiles", ["128x128", "1x128"])
def test_gemm_vs_fp32_on_unquantized_inputs(b_tiles):
    a, b, operands = _operands(256, 384, 1024, b_tiles)
    diff = calc_diff(gemm_reference(*operands), a @ b.t())
    assert diff < 1e-3, diff  # measured 6.8e-4 (128x128) and 6.9e-4 (1x128)


@pytest.mark.parametrize("b_tiles", ["128x128", "1x128"])
def test_promotion_equals_dequantized_matmul(b_tiles):
    """Scaling per K block after the product or before it is the same math; only FP32 summation order differs."""
    _, _, operands = _operands(200, 256, 640, b_tiles, seed=1)
    bias = torch.randn(256)
    ref = gemm_reference(*operands, bias=bias)
    fast = gemm_dequantized(*operands, bias=bias)
    assert float((ref - fast).norm() / ref.norm()) < 1e-6
    assert gemm_dequantized(*operands, out_dtype=torch.bfloat16).dtype == torch.bfloat16


def test_gemm_takes_strided_scales():
    _, _, (a_q, a_s, b_q, b_s) = _operands(128, 128, 256, "1x128", seed=2)
    column_major = a_s.t().contiguous().t()
    assert torch.equal(gemm_reference(a_q, a_s, b_q, b_s), gemm_reference(a_q, column_major, b_q, b_s))


def test_calc_diff_properties():
    x = torch.randn(1000, dtype=torch.float64)
    assert calc_diff(x, x) == 0.0
    assert calc_diff(torch.zeros(3), torch.zeros(3)) == 0.0
    assert abs(calc_diff(x, x * 1.01) - 0.01**2 / 2) < 1e-5  # ~ rel_err^2 / 2


def test_backend_selection_on_cpu():
    assert isinstance(get_ops("auto", torch.device("cpu")), ReferenceOps)
    assert isinstance(get_ops("reference", torch.device("cpu")), ReferenceOps)
    assert BACKENDS == ("auto", "reference", "triton", "scaled_mm")
    with pytest.raises(ValueError, match="not an FP8 backend"):
        check_backend("cutlass")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error given without CUDA")
@pytest.mark.parametrize("backend", ["triton", "scaled_mm"])
def test_gpu_backend_without_cuda_names_the_fix(backend):
    with pytest.raises(ValueError, match=rf"backend '{backend}' needs CUDA; use backend='reference'"):
        check_backend(backend)
    with pytest.raises(ValueError, match="needs CUDA"):
        get_ops(backend, torch.device("cpu"))
