"""DeepSeek-V3-style FP8 training: E4M3 tiles (1x128 activations and gradients, 128x128 weights), FP32 accumulation.

`convert_to_fp8(model)` swaps the attention and MLP Linears of a model for `Fp8Linear`, whose forward and both
backward GEMMs run in FP8; `convert_from_fp8(model)` swaps them back. The reference backend (pure torch) runs
anywhere and is the ground truth; on FP8 GPUs the Triton / cuBLAS backends take over. DESIGN.md beside this file
explains the math and the layout rules. Nothing here imports triton until a GPU backend is used.
"""

from posttrain.model.fp8.convert import (
    Fp8Report,
    convert_from_fp8,
    convert_to_fp8,
    enable_fp8_training,
    high_precision,
)
from posttrain.model.fp8.gemm import BACKENDS, calc_diff, check_backend, gemm_reference, get_ops
from posttrain.model.fp8.linear import Fp8Linear, fp8_linear
from posttrain.model.fp8.quant import (
    SCALE_MODES,
    dequantize_tiles,
    quantize_1x128,
    quantize_1x128_t,
    quantize_128x1,
    quantize_128x128,
    quantize_tiles,
)

__all__ = [
    "BACKENDS",
    "SCALE_MODES",
    "Fp8Linear",
    "Fp8Report",
    "calc_diff",
    "check_backend",
    "convert_from_fp8",
    "convert_to_fp8",
    "enable_fp8_training",
    "dequantize_tiles",
    "fp8_linear",
    "gemm_reference",
    "high_precision",
    "get_ops",
    "quantize_128x1",
    "quantize_128x128",
    "quantize_1x128",
    "quantize_1x128_t",
    "quantize_tiles",
]
