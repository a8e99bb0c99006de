"""GPU acceptance rows (FP8.md): the Triton quantization kernels bit-exact against the CPU reference, the GPU
GEMMs (Triton, cuBLAS `scaled_mm`) within 1e-3 of the reference on the same FP8 inputs, and the FP8 Linear on
CUDA against the reference backend. Skipped without CUDA; the same kernels' logic is checked on CPU by
test_fp8_triton_interpret.py."""

from __future__ import annotations

import warnings

import pytest
import torch

from posttrain.model.fp8 import Fp8Linear, calc_diff, convert_to_fp8, get_ops
from posttrain.model.fp8.gemm import ReferenceOps, check_backend, gemm_reference

HAS_FP8_GPU = torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 9)
IS_SM90 = torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    pytest.mark.skipif(not HAS_FP8_GPU, reason="needs an FP8 GPU (compute capability >= 8.9)"),
]


def _gpu_backends() -> list[str]:
    return ["triton", "scaled_mm"] if IS_SM90 else ["triton"]


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.uint8) if t.dtype == torch.float8_e4m3fn else t


def _assert_same_bits(got: tuple, want: tuple, name: str) -> None:
    for g, w in zip(got, want):
        g, w = _bits(g.cpu()), _bits(w.cpu())
        assert g.shape == w.shape, (name, g.shape, w.shape)
        mismatches = int((g != w).sum())
        assert mismatches == 0, f"{name}: {mismatches} of {g.numel()} differ"


@pytest.mark.parametrize("scale", ["pow2", "fp32"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_quantization_is_bit_exact(scale, dtype):
    from posttrain.model.fp8.triton_kernels import TritonOps

    ops, ref = TritonOps(), ReferenceOps()
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(1000, 1600, generator=gen) * torch.logspace(-11, 3, 1600)).to(dtype)
    x[:, :128] = 0
    w = torch.randn(1536, 576, generator=gen).to(dtype)
    x_gpu, w_gpu = x.cuda(), w.cuda()
    _assert_same_bits(ops.quantize_1x128(x_gpu, scale), ref.quantize_1x128(x, scale), "1x128")
    _assert_same_bits(ops.quantize_1x128_t(x_gpu, scale), ref.quantize_1x128_t(x, scale), "1x128 transposed")
    _assert_same_bits(ops.quantize_128x128(w_gpu, scale, True), ref.quantize_128x128(w, scale, True), "128x128")
    q_x, s_x = ref.quantize_1x128(x, scale)
    _assert_same_bits(
        ops.quantize_1x128_t(q_x.cuda(), scale, s_x.cuda()), ref.quantize_1x128_t(q_x, scale, s_x), "re-tile"
    )


@pytest.mark.parametrize("backend", _gpu_backends())
@pytest.mark.parametrize("b_tiles", ["128x128", "1x128"])
@pytest.mark.parametrize(("m", "n", "k"), [(256, 384, 1024), (300, 512, 640), (4096, 4096, 4096)])
def test_gpu_gemm_matches_reference(backend, b_tiles, m, n, k):
    ops = get_ops(backend, torch.device("cuda"))
    ref = ReferenceOps()
    gen = torch.Generator().manual_seed(1)
    a_q, a_s = ref.quantize_1x128(torch.randn(m, k, generator=gen), "pow2")
    b = torch.randn(n, k, generator=gen)
    b_q, b_s = ref.quantize_128x128(b, "pow2", False)[:2] if b_tiles == "128x128" else ref.quantize_1x128(b, "pow2")
    bias = torch.randn(n, generator=gen)
    want = gemm_reference(a_q, a_s, b_q, b_s, torch.float32, bias)
    a_s_gpu = a_s.cuda().t().contiguous().t()  # the column-major layout the GPU quantizers write
    got = ops.gemm(a_q.cuda(), a_s_gpu, b_q.cuda(), b_s.cuda(), torch.float32, bias.cuda()).cpu()
    assert float((got - want).norm() / want.norm()) <= 1e-3
    got_bf16 = ops.gemm(a_q.cuda(), a_s_gpu, b_q.cuda(), b_s.cuda(), torch.bfloat16).cpu()
    assert calc_diff(got_bf16, want - bias) < 1e-5


@pytest.mark.parametrize("backend", ["auto", *_gpu_backends()])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_linear_on_gpu_matches_reference_backend(backend, dtype):
    gen = torch.Generator().manual_seed(2)
    x, dy = torch.randn(4, 75, 576, generator=gen).to(dtype), torch.randn(4, 75, 192, generator=gen).to(dtype)
    results = []
    for device, name in (("cuda", backend), ("cpu", "reference")):
        torch.manual_seed(0)
        layer = Fp8Linear(576, 192, backend=name).to(device)
        xg = x.to(device).requires_grad_(True)
        y = layer(xg)
        y.backward(dy.to(device))
        assert y.dtype == dtype and xg.grad.dtype == dtype
        results.append([t.detach().float().cpu() for t in (y, xg.grad, layer.weight.grad, layer.bias.grad)])
    for name, got, want in zip(("out", "dX", "dW", "db"), *results):
        assert calc_diff(got, want) < 1e-5, (name, calc_diff(got, want))


def test_auto_picks_the_gpu_path_and_gpu_errors_name_the_fix():
    assert get_ops("auto", torch.device("cuda")).name in ("scaled_mm", "triton")
    assert get_ops("auto", torch.device("cpu")).name == "reference"
    with pytest.raises(ValueError, match="got a cpu tensor"):
        check_backend("triton", torch.device("cpu"))
    if not IS_SM90:
        with pytest.raises(ValueError, match="needs an SM90 GPU"):
            check_backend("scaled_mm")


def test_converted_llama_trains_on_gpu():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=512, hidden_size=576, intermediate_size=1536, num_hidden_layers=2,
                         num_attention_heads=9, num_key_value_heads=3, head_dim=64)  # fmt: skip
    model = LlamaForCausalLM(config).cuda()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = convert_to_fp8(model)
    assert len(report.converted) == 14
    ids = torch.randint(0, 512, (4, 128), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
