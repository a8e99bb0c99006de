"""Benchmark the FP8 training path against BF16 in one run and print the tables side by side.

Three measurements:
1. FP8 Linear forward+backward (Fprop, Dgrad, Wgrad) in TFLOP/s against a BF16 Linear (FP32 master weights under
   bf16 autocast, as the SFT stage trains), with the FP8 result's calc_diff against FP32 autograd.
2. GB/s of the four quantization kernels (1x128, 1x128 transposed, 128x128 with its transpose, re-tile), Triton
   against the torch reference.
3. A SFT-like step (Llama model, bf16 autocast, AdamW) with and without `convert_to_fp8`.

On CUDA it uses 4096-8192 shapes and every GPU backend that runs here. On CPU the FP8 path is an emulation: it
runs small shapes, labels every row "emulation", and its numbers say whether the code is correct, never how fast
FP8 is. Usage: `python benchmarks/fp8.py [--device cpu|cuda] [--quick] [--threads N]`.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
import warnings
from collections.abc import Callable

import torch
from torch import nn

from posttrain.model.fp8 import Fp8Linear, calc_diff, convert_to_fp8
from posttrain.model.fp8.gemm import ReferenceOps, check_backend

GPU_LINEAR_SHAPES = [(4096, 4096, 4096), (8192, 4096, 4096), (4096, 8192, 8192), (8192, 8192, 8192)]
CPU_LINEAR_SHAPES = [(512, 512, 512), (1024, 1024, 1024)]


def time_ms(fn: Callable[[], object], device: torch.device, warmup: int = 3, iters: int = 10) -> float:
    """Median wall time of fn() in milliseconds (CUDA events on GPU)."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iters):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            samples.append(start.elapsed_time(end))
        else:
            start_s = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - start_s) * 1e3)
    return statistics.median(samples)


@functools.cache
def fp8_backends(device: torch.device) -> list[str]:
    """FP8 backends that can run on `device`."""
    if device.type != "cuda":
        return ["reference"]
    runnable = []
    for backend in ("triton", "scaled_mm"):
        try:
            check_backend(backend, device)
            runnable.append(backend)
        except ValueError as error:
            print(f"  (skipping {backend}: {error})")
    return runnable or ["reference"]


def _fwd_bwd(layer: nn.Module, x: torch.Tensor, dy: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        layer.zero_grad(set_to_none=True)
        x.grad = None
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            y = layer(x)
        y.backward(dy)

    return step


def linear_accuracy(m: int, k: int, n: int, backend: str, device: torch.device) -> tuple[float, float, float]:
    """calc_diff of FP8 out, dX, dW against FP32 autograd on the same inputs."""
    torch.manual_seed(0)
    linear = nn.Linear(k, n, device=device)
    x, dy = torch.randn(m, k, device=device), torch.randn(m, n, device=device)
    results = []
    for layer in (linear, Fp8Linear.from_linear(linear, backend=backend)):
        xg = x.clone().requires_grad_(True)
        layer.zero_grad(set_to_none=True)
        y = layer(xg)
        y.backward(dy)
        results.append((y.detach(), xg.grad, layer.weight.grad.clone()))
    return tuple(calc_diff(got, want) for got, want in zip(results[1], results[0]))


def bench_linear(shapes: list[tuple[int, int, int]], device: torch.device) -> list[dict]:
    rows = []
    for m, k, n in shapes:
        torch.manual_seed(0)
        linear = nn.Linear(k, n, device=device)
        x = torch.randn(m, k, device=device, dtype=torch.bfloat16, requires_grad=True)
        dy = torch.randn(m, n, device=device, dtype=torch.bfloat16)
        flops = 6 * m * n * k  # three GEMMs of 2MNK
        row = {"shape": f"{m}x{k}x{n}", "bf16": flops / time_ms(_fwd_bwd(linear, x, dy), device) / 1e9}
        for backend in fp8_backends(device):
            layer = Fp8Linear.from_linear(linear, backend=backend)
            row[f"fp8:{backend}"] = flops / time_ms(_fwd_bwd(layer, x, dy), device) / 1e9
            row[f"diff:{backend}"] = linear_accuracy(min(m, 2048), k, n, backend, device)
        rows.append(row)
        del linear, x, dy
    return rows


def _quantizers(ops, scale: str = "pow2") -> dict[str, Callable[[torch.Tensor], object]]:
    def retile(x: torch.Tensor):
        q, s = x
        return ops.quantize_1x128_t(q, scale, s)

    return {
        "1x128": lambda x: ops.quantize_1x128(x, scale),
        "1x128 transposed": lambda x: ops.quantize_1x128_t(x, scale),
        "128x128 (+transpose)": lambda x: ops.quantize_128x128(x, scale, True),
        "re-tile FP8 1x128 -> 128x1": retile,
    }


def _quant_bytes(name: str, m: int, k: int, in_bytes: int) -> int:
    """Bytes read and written: the input, the FP8 output(s), the FP32 scales."""
    if name.startswith("re-tile"):
        return 2 * (m * k + (m * k // 128) * 4)
    if "128x128" in name:
        return m * k * in_bytes + 2 * m * k + (m * k // 128**2) * 4
    return m * k * in_bytes + m * k + (m * k // 128) * 4


def bench_quant(m: int, k: int, device: torch.device) -> list[dict]:
    x = torch.randn(m, k, device=device, dtype=torch.bfloat16)
    backends = {"reference (torch)": ReferenceOps()}
    if device.type == "cuda" and "triton" in fp8_backends(device):
        from posttrain.model.fp8.triton_kernels import TritonOps

        backends["triton"] = TritonOps()
    rows = []
    for name in _quantizers(ReferenceOps()):
        row = {"kernel": name, "shape": f"{m}x{k} bf16"}
        for label, ops in backends.items():
            fn = _quantizers(ops)[name]
            arg = ops.quantize_1x128(x, "pow2") if name.startswith("re-tile") else x
            row[label] = _quant_bytes(name, m, k, 2) / time_ms(lambda fn=fn, arg=arg: fn(arg), device) / 1e6
        rows.append(row)
    return rows


def _sft_model(device: torch.device):
    from transformers import LlamaConfig, LlamaForCausalLM

    if device.type == "cuda":
        config = LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=8,
                             num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=2048)  # fmt: skip
        batch, seq = 4, 2048
    else:
        config = LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)  # fmt: skip
        batch, seq = 4, 128
    torch.manual_seed(0)
    return LlamaForCausalLM(config).to(device), batch, seq


def bench_sft_step(device: torch.device) -> list[dict]:
    rows = []
    for mode in ["bf16", *(f"fp8:{b}" for b in fp8_backends(device))]:
        model, batch, seq = _sft_model(device)
        if mode != "bf16":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                convert_to_fp8(model, backend=mode.split(":")[1])
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
        ids = torch.randint(0, model.config.vocab_size, (batch, seq), device=device)

        def step(model=model, optimizer=optimizer, ids=ids) -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        ms = time_ms(step, device, warmup=3, iters=5 if device.type == "cuda" else 3)
        rows.append({"mode": mode, "ms/step": ms, "tokens/s": batch * seq / ms * 1e3})
        del model, optimizer
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def print_table(title: str, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))

    def fmt(value) -> str:
        if isinstance(value, tuple):
            return "/".join(f"{v:.1e}" for v in value)
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    cells = [[fmt(row.get(c, "-")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print(f"\n{title}")
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--quick", action="store_true", help="one Linear shape, smaller quantization tensor")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    args = parser.parse_args()
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    emulation = device.type != "cuda"
    label = "CPU EMULATION: correctness only, not FP8 speed" if emulation else torch.cuda.get_device_name()
    print(f"FP8 benchmark on {device} ({label}); torch {torch.__version__}")
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = CPU_LINEAR_SHAPES if emulation else GPU_LINEAR_SHAPES
    shapes = shapes[:1] if args.quick else shapes
    suffix = " [emulation]" if emulation else ""
    print_table(
        f"Linear fwd+bwd, TFLOP/s; diff = calc_diff out/dX/dW of FP8 vs FP32 autograd{suffix}",
        bench_linear(shapes, device),
    )
    m, k = (1024, 1024) if emulation or args.quick else (8192, 8192)
    print_table(f"Quantization, GB/s{suffix}", bench_quant(m, k, device))
    print_table(f"SFT-like step (Llama, bf16 autocast, AdamW){suffix}", bench_sft_step(device))


if __name__ == "__main__":
    main()
