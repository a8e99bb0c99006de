"""The Triton kernels checked on CPU through Triton's interpreter (TRITON_INTERPRET=1), against quant.py and
the reference GEMM: same bits for every quantization (scales and FP8 codes), the GEMM within FP32 rounding.

This checks the kernels' logic (indexing, masks, padding, transposed stores, scale math) where no GPU exists;
the GPU tests check the compiled kernels. The interpreter's own float32 -> float8/bfloat16 conversion rounds
half-up without carrying into the exponent, unlike the GPU's round-to-nearest-even `cvt.rn.satfinite`, so this
check swaps in torch's (RNE) conversion for those two casts. It runs in a subprocess because TRITON_INTERPRET
must be set before the kernels are defined.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

HERE = os.path.abspath(__file__)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs the triton package")
def test_triton_kernels_in_the_interpreter_match_the_reference():
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    root = os.path.dirname(os.path.dirname(HERE))
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, HERE], env=env, capture_output=True, text=True, timeout=300)
    if "SKIP:" in done.stdout:
        pytest.skip(done.stdout.split("SKIP:", 1)[1].strip())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all interpreter checks passed" in done.stdout


def _use_rne_casts() -> bool:
    """Route the interpreter's float32 -> float8e4nv / bfloat16 casts through torch (round-to-nearest-even)."""
    import numpy as np
    import torch
    import triton.language as tl
    from triton.runtime import interpreter

    original = getattr(interpreter, "_convert_float", None)
    if original is None:
        return False

    def convert(values, src_dtype, dst_dtype, rounding_mode):
        if src_dtype == tl.float32 and dst_dtype in (tl.float8e4nv, tl.bfloat16):
            x = torch.from_numpy(np.ascontiguousarray(values).view(np.float32).copy())
            if dst_dtype == tl.float8e4nv:
                return x.to(torch.float8_e4m3fn).view(torch.uint8).numpy().reshape(values.shape)
            return x.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16).reshape(values.shape)
        return original(values, src_dtype, dst_dtype, rounding_mode)

    interpreter._convert_float = convert
    return True


def _check_quantizers(ops, ref) -> None:
    import torch

    def same(name, got, want):
        for g, w in zip(got, want):
            g, w = (t.view(torch.uint8) if t.dtype == torch.float8_e4m3fn else t for t in (g, w))
            assert g.shape == w.shape and torch.equal(g, w), name

    gen = torch.Generator().manual_seed(0)
    for scale in ("pow2", "fp32"):
        x = torch.randn(200, 300, generator=gen) * torch.logspace(-11, 2, 300)
        x[:, :128] = 0  # an all-zero tile column
        same(f"1x128 {scale}", ops.quantize_1x128(x, scale), ref.quantize_1x128(x, scale))
        same(f"1x128 bf16 {scale}", ops.quantize_1x128(x.bfloat16(), scale), ref.quantize_1x128(x.bfloat16(), scale))
        same(f"128x1_t {scale}", ops.quantize_1x128_t(x, scale), ref.quantize_1x128_t(x, scale))
        q_x, s_x = ref.quantize_1x128(x, scale)
        same(f"re-tile {scale}", ops.quantize_1x128_t(q_x, scale, s_x), ref.quantize_1x128_t(q_x, scale, s_x))
        w = torch.randn(192, 576, generator=gen)
        same(f"128x128 {scale}", ops.quantize_128x128(w, scale, True), ref.quantize_128x128(w, scale, True))


def _check_gemm_and_linear(ops, ref) -> None:
    import torch

    from posttrain.model.fp8.gemm import gemm_reference
    from posttrain.model.fp8.linear import _Fp8LinearFunction

    gen = torch.Generator().manual_seed(1)
    a_q, a_s = ref.quantize_1x128(torch.randn(200, 512, generator=gen), "pow2")
    b = torch.randn(320, 512, generator=gen)
    for b_q, b_s in (ref.quantize_128x128(b, "pow2", False)[:2], ref.quantize_1x128(b, "pow2")):
        bias = torch.randn(b_q.shape[0], generator=gen)
        want = gemm_reference(a_q, a_s, b_q, b_s, torch.float32, bias)
        got = ops.gemm(a_q, a_s.t().contiguous().t(), b_q, b_s, torch.float32, bias)
        assert float((got - want).norm() / want.norm()) < 1e-6
        got_bf16 = ops.gemm(a_q, a_s, b_q, b_s, torch.bfloat16, bias)
        assert torch.equal(got_bf16, want.bfloat16()) or float((got_bf16.float() - want).norm() / want.norm()) < 4e-3
    x, w, dy = torch.randn(100, 576, generator=gen), torch.randn(192, 576, generator=gen), torch.randn(100, 192)
    results = []
    for backend_ops in (ops, ref):
        xg, wg = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
        _Fp8LinearFunction.apply(xg, wg, None, backend_ops, "pow2", torch.float32).backward(dy)
        results.append((xg.grad, wg.grad))
    for got, want in zip(*results):
        assert float((got - want).norm() / want.norm()) < 1e-6


def main() -> None:
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise SystemExit("run through pytest, or with TRITON_INTERPRET=1")
    if not _use_rne_casts():
        print("SKIP: this triton version has no interpreter cast hook to make its FP8 cast round-to-nearest-even")
        return
    from posttrain.model.fp8.gemm import ReferenceOps
    from posttrain.model.fp8.triton_kernels import TritonOps

    _check_quantizers(TritonOps(), ReferenceOps())
    _check_gemm_and_linear(TritonOps(), ReferenceOps())
    print("all interpreter checks passed")


if __name__ == "__main__":
    main()
