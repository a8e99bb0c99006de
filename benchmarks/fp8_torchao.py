"""torchao's blockwise FP8 training prototype as one more implementation for `benchmarks/fp8.py`.

`torchao.prototype.blockwise_fp8_training` (written against torchao 0.18.0) is the same recipe as ours: 1x128
activation and gradient tiles, 128x128 weight blocks, E4M3, FP32 accumulation per 128-K block. Its Linear
(`fp8_blockwise_mm`) quantizes with Triton kernels and multiplies either with cuBLAS (`F.scaled_mm`, its default,
`use_triton=False`) or with its own Triton GEMMs (`use_triton=True`). Differences from ours worth knowing when
reading the numbers: it saves the BF16 input (ours saves FP8), writes dW in BF16 (ours FP32), uses exact (not
power-of-two) scales, and its Linear takes no bias.

Everything here mirrors torchao's own code path: `layer` runs `fp8_blockwise_mm` (what `Float8BlockwiseLinear`
runs, without its SM90 assert so that it can be driven by the Triton interpreter on CPU), and `phases` repeats the
quantize + GEMM calls of its forward and backward one GEMM at a time. Nothing is imported until an object is built,
so `benchmarks/fp8.py` runs without torchao.

Autotuning: torchao's three activation quantizers autotune over 45 configs each, per K, which costs tens of seconds
per shape on a cold Triton cache. `autotune="small"` keeps 8 of them (NUM_GROUPS 32/128 x 4/8 warps x 2/4 stages),
so that a timed device run fits its lease; `"full"` keeps all (torchao's own behaviour); `"one"` keeps the first
(the Triton interpreter cannot time configs). The GEMM kernels always keep their 12 configs.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import torch
from torch import nn

TESTED_VERSION = "0.18.0"
_ACT_QUANT_KERNELS = (
    "triton_fp8_blockwise_act_quant_lhs_kernel",
    "triton_fp8_blockwise_act_quant_rhs_kernel",
    "triton_fp8_blockwise_act_quant_transposed_lhs_kernel",
)
_ALL_KERNELS = (
    *_ACT_QUANT_KERNELS,
    "triton_fp8_blockwise_weight_quant_rhs_kernel",
    "triton_fp8_blockwise_weight_quant_transposed_rhs_kernel",
    "triton_fp8_gemm_1x128_128x128_kernel",
    "triton_fp8_gemm_1x128_128x1_kernel",
)


def unavailable_reason(device: torch.device, use_triton: bool, interpret: bool = False) -> str | None:
    """Why torchao's blockwise FP8 cannot run here (None when it can)."""
    if importlib.util.find_spec("torchao") is None:
        return "torchao is not installed (carry its wheel: benchmarks/gpu_wheels.sh)"
    if interpret:
        return None if use_triton else "torchao's scaled_mm path needs cuBLAS on an SM90 GPU"
    if device.type != "cuda":
        return "torchao's blockwise FP8 needs CUDA (or the Triton interpreter for its Triton path)"
    if torch.cuda.get_device_capability(device) < (9, 0):
        return "torchao's blockwise FP8 needs an SM90 GPU"
    try:
        import torchao.prototype.blockwise_fp8_training.linear  # noqa: F401
    except Exception as error:  # an incompatible torchao / torch pair fails here
        return f"torchao.prototype.blockwise_fp8_training does not import: {error!r}"[:300]
    return None


def _torch_act_quant_transposed_lhs(x: torch.Tensor, block_size: int = 128):
    """Same layout as torchao's kernel (q [K, M] row-major, decode scales [K, M/128] column-major), made with our
    reference quantizer: only used under the Triton interpreter, which cannot run torchao's kernel."""
    from posttrain.model.fp8 import quant

    q, s = quant.quantize_1x128_t(x)
    return q.contiguous(), s.t().contiguous().t()


def _torch_weight_quant_transposed_rhs(w: torch.Tensor, block_size: int = 128):
    """Same layout as torchao's kernel (W^T as a column-major [K, N], decode scales [K/128, N/128] column-major);
    interpreter only, like the function above."""
    from posttrain.model.fp8 import quant

    q, s = quant.quantize_128x128(w)
    return q.t(), s.t()


class _BlockwiseLinear(nn.Module):
    """`Float8BlockwiseLinear.forward` of torchao: `fp8_blockwise_mm.apply(x, weight, 128, bf16, use_triton)`,
    sharing the weight of the Linear it wraps (no bias, as torchao requires)."""

    def __init__(self, linear: nn.Linear, mm, use_triton: bool):
        super().__init__()
        assert linear.bias is None, "torchao's blockwise FP8 Linear takes no bias"
        self.weight, self._mm, self.use_triton = linear.weight, mm, use_triton

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._mm.apply(x, self.weight, 128, torch.bfloat16, self.use_triton)


class TorchaoImpl:
    """torchao's blockwise FP8 Linear: the module, its three GEMMs one at a time, and its quantizers."""

    def __init__(self, use_triton: bool, autotune: str = "full", interpret: bool = False):
        import torchao
        from torchao.prototype.blockwise_fp8_training import kernels, linear

        self.version = getattr(torchao, "__version__", "?")
        self.name = "torchao:triton" if use_triton else "torchao:scaled_mm"
        self.use_triton, self.interpret = use_triton, interpret
        self.kernels, self.linear = kernels, linear
        self.notes: list[str] = []
        if self.version != TESTED_VERSION:
            self.notes.append(f"torchao {self.version}; this adapter was written against {TESTED_VERSION}")
        self._restrict_autotune("one" if interpret else autotune)
        if interpret:
            # Two of torchao's kernels hit Triton-interpreter limits ('mask has unsupported dtype', 'too many indices
            # for tensor of rank 0'); same-layout torch stand-ins keep the rest of the path running on CPU.
            linear.triton_fp8_blockwise_act_quant_transposed_lhs = _torch_act_quant_transposed_lhs
            linear.triton_fp8_blockwise_weight_quant_transposed_rhs = _torch_weight_quant_transposed_rhs
            self.notes.append(
                "interpreter: act_quant_transposed_lhs and weight_quant_transposed_rhs replaced by torch"
            )
        self.q = {
            "act_lhs": linear.triton_fp8_blockwise_act_quant_lhs,
            "act_rhs": linear.triton_fp8_blockwise_act_quant_rhs,
            "act_t_lhs": linear.triton_fp8_blockwise_act_quant_transposed_lhs,
            "w_rhs": linear.triton_fp8_blockwise_weight_quant_rhs,
            "w_t_rhs": linear.triton_fp8_blockwise_weight_quant_transposed_rhs,
        }

    def _restrict_autotune(self, mode: str) -> None:
        if mode == "full":
            return
        for name in _ALL_KERNELS:
            tuner = getattr(self.kernels, name, None)
            configs = getattr(tuner, "configs", None)
            if not configs:
                continue
            if mode == "one":
                tuner.configs = configs[:1]
            elif name in _ACT_QUANT_KERNELS:
                keep = [
                    c
                    for c in configs
                    if c.kwargs.get("NUM_GROUPS") in (32, 128) and c.num_warps in (4, 8) and c.num_stages in (2, 4)
                ]
                tuner.configs = keep or configs
        if mode == "small":
            self.notes.append("activation quantizers autotuned over 8 of torchao's 45 configs (lease time)")

    def _mm(self, kernel, a, b, sa, recipe_a, sb, recipe_b, out_dtype, triton_sb=None):
        return self.linear._run_blockwise_mm(
            use_triton=self.use_triton,
            triton_kernel=kernel,
            mat_a=a,
            mat_b=b,
            scale_a=sa,
            scale_recipe_a=recipe_a,
            scale_b=sb,
            scale_recipe_b=recipe_b,
            triton_scale_b=triton_sb,
            out_dtype=out_dtype,
        )

    def layer(self, linear: nn.Linear) -> nn.Module:
        return _BlockwiseLinear(linear, self.linear.fp8_blockwise_mm, self.use_triton)

    def phases(
        self, x_MK: torch.Tensor, w_NK: torch.Tensor, dy_MN: torch.Tensor
    ) -> dict[str, tuple[Callable[[], object], Callable[[], object]]]:
        """{fwd, dgrad, wgrad: (quantize + GEMM, GEMM only)} exactly as `fp8_blockwise_mm` calls them."""
        k, q = self.kernels, self.q
        one, block = k.BLOCKWISE_1X128_SCALING_TYPE, k.BLOCKWISE_128X128_SCALING_TYPE
        g128, g1 = k.triton_fp8_gemm_1x128_128x128, k.triton_fp8_gemm_1x128_128x1
        bf16 = torch.bfloat16

        def fwd_ops():
            xq, xs = q["act_lhs"](x_MK, 128)
            wq, ws = q["w_t_rhs"](w_NK, block_size=128)
            return xq, xs, wq, ws

        def dgrad_ops():
            gq, gs = q["act_lhs"](dy_MN, 128)
            wq, ws = q["w_rhs"](w_NK, block_size=128)
            return gq, gs, wq, ws

        def wgrad_ops():
            gq, gs = q["act_t_lhs"](dy_MN, 128)
            xq, xs = q["act_rhs"](x_MK, 128)
            return gq, gs, xq, xs

        def fwd_mm(a, sa, b, sb):
            return self._mm(g128, a, b, sa, one, sb, block, bf16)

        def wgrad_mm(a, sa, b, sb):
            return self._mm(g1, a, b, sa, one, sb.transpose(-1, -2), one, bf16, triton_sb=sb)

        fwd_in, dgrad_in, wgrad_in = fwd_ops(), dgrad_ops(), wgrad_ops()
        return {
            "fwd": (lambda: fwd_mm(*fwd_ops()), lambda: fwd_mm(*fwd_in)),
            "dgrad": (lambda: fwd_mm(*dgrad_ops()), lambda: fwd_mm(*dgrad_in)),
            "wgrad": (lambda: wgrad_mm(*wgrad_ops()), lambda: wgrad_mm(*wgrad_in)),
        }

    def quantizers(self, x: torch.Tensor) -> dict[str, tuple[Callable[[], object], int]]:
        """Our quantization kernels' names -> (torchao's counterpart called on x, FP8 outputs it writes)."""
        q = self.q
        return {
            "1x128": (lambda: q["act_lhs"](x, 128), 1),
            "1x128 transposed": (lambda: q["act_t_lhs"](x, 128), 1),
            "128x128 (+transpose)": (lambda: q["w_t_rhs"](x, block_size=128), 1),
        }

    def convert(self, model: nn.Module) -> int:
        """Swap every bias-free Linear with both dims divisible by 128, except the output head, in place."""
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        swaps = []
        for name, module in model.named_modules():
            plain = type(module) is nn.Linear and module is not head and module.bias is None
            if plain and module.in_features % 128 == 0 and module.out_features % 128 == 0:
                swaps.append((name, module))
        for name, module in swaps:
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf, self.layer(module))
        return len(swaps)
