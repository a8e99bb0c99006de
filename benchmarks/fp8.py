"""Benchmark the FP8 training path against BF16 and torchao's blockwise FP8 prototype, side by side in one run.

Four measurements, every figure also written to `--json` (rewritten after each one, so a run cut short keeps what
it measured):
1. Linear forward+backward, module level: TFLOP/s of BF16 (FP32 master weights under bf16 autocast, as the SFT
   stage trains), our FP8 Linear per backend (`triton`, `scaled_mm`), and torchao's blockwise FP8 Linear (cuBLAS
   `scaled_mm`, and its Triton GEMMs); speed-up over BF16; calc_diff of out / dX / dW against FP32 autograd.
2. The three GEMMs one at a time (Fprop, Dgrad, Wgrad): TFLOP/s with the quantization each needs in training and
   GEMM only. Ours: Fprop quantizes x and W (with W^T for Dgrad), Dgrad quantizes dy, Wgrad quantizes dy^T and
   re-tiles the saved FP8 x; torchao re-quantizes W in Dgrad and x in Wgrad. The BF16 column is the bare matmul.
3. GB/s of the quantization kernels: torch reference, our Triton kernels, torchao's.
4. An SFT-like step (Llama, bf16 autocast, AdamW) with and without FP8.
At the end the spec's targets are checked: FP8 Linear fwd+bwd >= 1.3x BF16 at 4096-8192 shapes, and our Wgrad at
least torchao's.

On CUDA it uses 4096-8192 shapes and every GPU implementation that runs there; `--budget-s` skips what no longer
fits (most important first: both 4096^3 and 8192^3 for BF16, ours and torchao-cuBLAS; then quantization, SFT,
torchao's Triton GEMMs, the other shapes). On CPU the FP8 path is an emulation: small shapes, every row labelled
"emulation", numbers that say whether the code is correct, never how fast FP8 is. `--cpu-smoke` runs the smallest
shapes through every code path the CPU can reach: the reference backend, and our Triton kernels and torchao's
through the Triton interpreter (TRITON_INTERPRET=1).

Usage: `python benchmarks/fp8.py [--device cpu|cuda] [--quick] [--cpu-smoke] [--json PATH] [--budget-s S]
[--impls bf16,fp8:triton,...] [--torchao-autotune full|small] [--threads N]`.
"""

from __future__ import annotations

import argparse
import functools
import gc
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # fp8_torchao.py beside this file

from posttrain.model.fp8 import Fp8Linear, calc_diff, convert_to_fp8  # noqa: E402
from posttrain.model.fp8.gemm import check_backend, get_ops  # noqa: E402

GPU_PRIMARY_SHAPES = [(4096, 4096, 4096), (8192, 8192, 8192)]  # M x K x N
GPU_EXTRA_SHAPES = [(8192, 4096, 4096), (4096, 8192, 8192)]
CPU_LINEAR_SHAPES = [(512, 512, 512), (1024, 1024, 1024)]
SMOKE_SHAPES = [(256, 256, 256)]
PHASES = ("fwd", "dgrad", "wgrad")
FP8_DENSE_PEAK_TFLOPS = 1979.0  # H100/H200 SXM datasheet, dense FP8; a lead, not a measurement
SPEEDUP_TARGET = 1.3


# ----------------------------------------------------------------------------------------------- timing, budget


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_ms(fn: Callable[[], object], device: torch.device, warmup: int = 3, iters: int = 10) -> float:
    """Median time of fn() in milliseconds (CUDA events on GPU, after `warmup` untimed calls)."""
    for _ in range(warmup):
        fn()
    sync(device)
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


class Budget:
    """Wall-clock budget of the whole run (None: unlimited)."""

    def __init__(self, seconds: float | None):
        self.end = None if not seconds else time.monotonic() + seconds

    def left(self) -> float:
        return math.inf if self.end is None else self.end - time.monotonic()


class Results:
    """Every figure of the run, saved as JSON after each addition."""

    def __init__(self, path: str | None, meta: dict):
        self.path = Path(path) if path else None
        self.data: dict = {"meta": meta, "linear": [], "phases": [], "quant": [], "sft": [], "skipped": [],
                           "notes": [], "targets": []}  # fmt: skip

    def add(self, section: str, row: dict) -> None:
        self.data[section].append(row)
        self.save()

    def skip(self, what: str, why: str) -> None:
        print(f"  (skipped {what}: {why})", flush=True)
        self.add("skipped", {"what": what, "why": why})

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        os.replace(tmp, self.path)


# ------------------------------------------------------------------------------------------------- implementations


class Bf16Impl:
    """The baseline: nn.Linear with FP32 master weights under bf16 autocast; the GEMMs as bare BF16 matmuls."""

    name = "bf16"
    notes: list[str] = []

    def layer(self, linear: nn.Linear) -> nn.Module:
        return linear

    def phases(self, x_MK, w_NK, dy_MN):
        w = w_NK.to(torch.bfloat16)
        fns = {
            "fwd": lambda: torch.nn.functional.linear(x_MK, w),
            "dgrad": lambda: dy_MN @ w,
            "wgrad": lambda: dy_MN.t() @ x_MK,
        }
        return {p: (f, f) for p, f in fns.items()}


class _DirectFp8Linear(nn.Module):
    """Our FP8 autograd Function driven with an explicit ops object: lets the Triton interpreter (CPU tensors) run
    the Triton backend, which `get_ops` refuses off CUDA. Same math as Fp8Linear."""

    def __init__(self, linear: nn.Linear, ops):
        super().__init__()
        self.weight, self.bias, self.ops = linear.weight, linear.bias, ops

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from posttrain.model.fp8.linear import _Fp8LinearFunction, _output_dtype

        out_dtype = _output_dtype(x)
        with torch.autocast(x.device.type, enabled=False):
            y = _Fp8LinearFunction.apply(x.reshape(-1, x.shape[-1]), self.weight, self.bias, self.ops, "pow2",
                                         out_dtype)  # fmt: skip
        return y.reshape(*x.shape[:-1], self.weight.shape[0])


class OursImpl:
    """Our FP8 Linear with one backend; `ops` given = that ops object on CPU tensors (the Triton interpreter)."""

    def __init__(self, backend: str, ops=None, label: str | None = None):
        self.backend, self.ops = backend, ops
        self.name = label or f"fp8:{backend}"
        self.notes: list[str] = []

    def _ops(self, device: torch.device):
        return self.ops if self.ops is not None else get_ops(self.backend, device)

    def layer(self, linear: nn.Linear) -> nn.Module:
        if self.ops is not None:
            return _DirectFp8Linear(linear, self.ops)
        return Fp8Linear.from_linear(linear, backend=self.backend)

    def phases(self, x_MK, w_NK, dy_MN):
        ops, s = self._ops(x_MK.device), "pow2"
        bf16, fp32 = torch.bfloat16, torch.float32

        def fwd_ops():
            q_x, s_x = ops.quantize_1x128(x_MK, s)
            q_w, s_w, q_wT = ops.quantize_128x128(w_NK, s, True)
            return q_x, s_x, q_w, s_w, q_wT

        q_x, s_x, q_w, s_w, q_wT = fwd_ops()

        def fwd():
            a, sa, b, sb, _ = fwd_ops()
            return ops.gemm(a, sa, b, sb, bf16)

        def dgrad():
            q_dy, s_dy = ops.quantize_1x128(dy_MN, s)
            return ops.gemm(q_dy, s_dy, q_wT, s_w.t(), bf16)

        def wgrad():
            q_dyT, s_dyT = ops.quantize_1x128_t(dy_MN, s)
            q_xT, s_xT = ops.quantize_1x128_t(q_x, s, x_scale=s_x)
            return ops.gemm(q_dyT, s_dyT, q_xT, s_xT, fp32)

        q_dy, s_dy = ops.quantize_1x128(dy_MN, s)
        q_dyT, s_dyT = ops.quantize_1x128_t(dy_MN, s)
        q_xT, s_xT = ops.quantize_1x128_t(q_x, s, x_scale=s_x)
        return {
            "fwd": (fwd, lambda: ops.gemm(q_x, s_x, q_w, s_w, bf16)),
            "dgrad": (dgrad, lambda: ops.gemm(q_dy, s_dy, q_wT, s_w.t(), bf16)),
            "wgrad": (wgrad, lambda: ops.gemm(q_dyT, s_dyT, q_xT, s_xT, fp32)),
        }

    def quantizers(self, x: torch.Tensor) -> dict[str, tuple[Callable[[], object], int]]:
        """Kernel name -> (a call on x, FP8 outputs it writes); the re-tile starts from x quantized 1x128."""
        ops, s = self._ops(x.device), "pow2"
        q_x, s_x = ops.quantize_1x128(x, s)
        return {
            "1x128": (lambda: ops.quantize_1x128(x, s), 1),
            "1x128 transposed": (lambda: ops.quantize_1x128_t(x, s), 1),
            "128x128 (+transpose)": (lambda: ops.quantize_128x128(x, s, True), 2),
            "re-tile FP8 1x128 -> 128x1": (lambda: ops.quantize_1x128_t(q_x, s, x_scale=s_x), 1),
        }


def interpreter_rne_casts() -> bool:
    """Make the Triton interpreter's float32 -> float8e4nv / bfloat16 casts round to nearest even, as the GPU's
    `cvt.rn` does (its own conversion rounds half-up without carrying into the exponent, which garbles some
    codes); tests/test_fp8_triton_interpret.py does the same. False when this triton has no such hook."""
    import numpy as np
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


def build_impls(device: torch.device, args, results: Results) -> list:
    """Every implementation that runs here, in column order; what cannot run is recorded as skipped."""
    impls: list = [Bf16Impl()]
    if device.type == "cuda":
        for backend in ("triton", "scaled_mm"):
            try:
                check_backend(backend, device)
                get_ops(backend, device)  # runs the backend's self-check now, not inside a timing
                impls.append(OursImpl(backend))
            except Exception as error:  # a failed self-check must not end the benchmark
                results.skip(f"fp8:{backend}", f"{type(error).__name__}: {error}"[:300])
    else:
        impls.append(OursImpl("reference"))
        if args.cpu_smoke:
            if importlib.util.find_spec("triton") is None:
                results.skip("fp8:triton (interpreter)", "triton is not installed")
            else:
                from posttrain.model.fp8.triton_kernels import TritonOps

                if not interpreter_rne_casts():
                    results.data["notes"].append("Triton interpreter casts round half-up here: FP8 codes may differ")
                impls.append(OursImpl("triton", ops=TritonOps(), label="fp8:triton[interp]"))
    if args.no_torchao:
        return impls
    from fp8_torchao import TorchaoImpl, unavailable_reason

    interpret = device.type != "cuda"
    for use_triton in (False, True):
        label = ("torchao:triton" if use_triton else "torchao:scaled_mm") + ("[interp]" if interpret else "")
        if interpret and not args.cpu_smoke:
            continue
        reason = unavailable_reason(device, use_triton, interpret=interpret)
        if reason:
            results.skip(label, reason)
            continue
        try:
            impl = TorchaoImpl(use_triton, autotune=args.torchao_autotune, interpret=interpret)
            impl.name = label
            impls.append(impl)
        except Exception as error:
            results.skip(label, f"{type(error).__name__}: {error}"[:300])
    return impls


def selected(impls: list, wanted: str | None) -> list:
    if not wanted:
        return impls
    names = {w.strip() for w in wanted.split(",")}
    return [i for i in impls if i.name in names or i.name.split("[")[0] in names]


# ------------------------------------------------------------------------------------------------- measurements


def _fwd_bwd(layer: nn.Module, x: torch.Tensor, dy: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        layer.zero_grad(set_to_none=True)
        x.grad = None
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            y = layer(x)
        y.backward(dy.to(y.dtype))

    return step


def linear_accuracy(impl, m: int, k: int, n: int, device: torch.device) -> tuple[float, float, float]:
    """calc_diff of out, dX, dW against FP32 autograd on the same FP32 inputs (BF16: under bf16 autocast)."""
    torch.manual_seed(0)
    linear = nn.Linear(k, n, bias=False, device=device)
    x, dy = torch.randn(m, k, device=device), torch.randn(m, n, device=device)
    results = []
    for layer, autocast in ((linear, False), (impl.layer(linear), impl.name == "bf16")):
        xg = x.clone().requires_grad_(True)
        layer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            y = layer(xg)
        y.backward(dy.to(y.dtype))
        results.append((y.detach(), xg.grad, linear.weight.grad.clone()))
    return tuple(calc_diff(got, want) for got, want in zip(results[1], results[0]))


def bench_linear_unit(impl, shape, device, results: Results, reps: dict) -> None:
    """Module fwd+bwd, accuracy and the three GEMMs of one implementation at one shape."""
    m, k, n = shape
    label = f"{m}x{k}x{n}"
    if "[interp]" in impl.name:  # the Triton interpreter: once is enough to prove the path runs
        reps = {"warmup": 0, "iters": 1}
    torch.manual_seed(0)
    linear = nn.Linear(k, n, bias=False, device=device)
    x = torch.randn(m, k, device=device, dtype=torch.bfloat16, requires_grad=True)
    dy = torch.randn(m, n, device=device, dtype=torch.bfloat16)
    flops = 2 * m * n * k
    ms = time_ms(_fwd_bwd(impl.layer(linear), x, dy), device, **reps)
    diff = linear_accuracy(impl, min(m, 2048), k, n, device)
    results.add("linear", {"shape": label, "impl": impl.name, "ms": ms, "tflops": 3 * flops / ms / 1e9,
                           "calc_diff_out_dx_dw": diff})  # fmt: skip
    x_MK = x.detach()
    phases = impl.phases(x_MK, linear.weight.detach(), dy)
    for phase in PHASES:
        total, gemm_only = phases[phase]
        ms_total = time_ms(total, device, **reps)
        ms_gemm = time_ms(gemm_only, device, **reps)
        results.add("phases", {"shape": label, "impl": impl.name, "phase": phase, "ms": ms_total,
                               "tflops": flops / ms_total / 1e9, "ms_gemm": ms_gemm,
                               "tflops_gemm": flops / ms_gemm / 1e9})  # fmt: skip
    del linear, x, dy, phases


def _quant_bytes(name: str, m: int, k: int, in_bytes: int, fp8_outputs: int) -> int:
    """Bytes read and written: the input, the FP8 output(s), the FP32 scales."""
    if name.startswith("re-tile"):
        return 2 * (m * k + (m * k // 128) * 4)
    scales = (m * k // 128**2) * 4 if "128x128" in name else (m * k // 128) * 4
    return m * k * in_bytes + fp8_outputs * m * k + scales


def bench_quant(m: int, k: int, impls: list, device: torch.device, results: Results, reps: dict) -> None:
    """GB/s of each quantization kernel: torch reference, our Triton kernels, torchao's counterparts."""
    x = torch.randn(m, k, device=device, dtype=torch.bfloat16)
    columns = {"reference (torch)": OursImpl("reference").quantizers(x)}
    for impl in impls:
        if impl.name.startswith("fp8:triton"):
            columns[impl.name] = impl.quantizers(x)
    torchao = next((i for i in impls if i.name.startswith("torchao")), None)
    if torchao is not None:
        columns["torchao" + ("[interp]" if "[interp]" in torchao.name else "")] = torchao.quantizers(x)
    for name in columns["reference (torch)"]:
        row: dict = {"kernel": name, "shape": f"{m}x{k} bf16"}
        for label, quantizers in columns.items():
            if name in quantizers:
                fn, outputs = quantizers[name]
                row[label] = _quant_bytes(name, m, k, 2, outputs) / time_ms(fn, device, **reps) / 1e6
        results.add("quant", row)


def _sft_model(device: torch.device, smoke: bool):
    from transformers import LlamaConfig, LlamaForCausalLM

    if device.type == "cuda":
        config = LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=8,
                             num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=2048)  # fmt: skip
        batch, seq = 4, 2048
    else:
        config = LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)  # fmt: skip
        batch, seq = (2, 128) if smoke else (4, 128)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).to(device), batch, seq


def bench_sft_mode(impl, device: torch.device, results: Results, smoke: bool) -> None:
    model, batch, seq = _sft_model(device, smoke)
    converted = 0
    if impl.name.startswith("fp8:"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            converted = len(convert_to_fp8(model, backend=impl.backend).converted)
    elif impl.name.startswith("torchao"):
        converted = impl.convert(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
    ids = torch.randint(0, model.config.vocab_size, (batch, seq), device=device)

    def step(model=model, optimizer=optimizer, ids=ids) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    on_gpu = device.type == "cuda"
    ms = time_ms(step, device, warmup=3 if on_gpu else 1, iters=5 if on_gpu else (2 if smoke else 3))
    results.add("sft", {"mode": impl.name, "linears_in_fp8": converted, "ms/step": ms,
                        "tokens/s": batch * seq / ms * 1e3, "tokens/step": batch * seq})  # fmt: skip
    del model, optimizer


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------------- report


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)] if rows else map(len, header)
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))


def _f(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def report(data: dict, emulation: bool) -> None:
    tag = " [emulation]" if emulation else ""
    shapes = list(dict.fromkeys(r["shape"] for r in data["linear"]))
    impls = list(dict.fromkeys(r["impl"] for r in data["linear"]))
    linear = {(r["shape"], r["impl"]): r for r in data["linear"]}
    rows = []
    for shape in shapes:
        base = linear.get((shape, "bf16"))
        cells = [shape]
        for impl in impls:
            r = linear.get((shape, impl))
            if r is None:
                cells.append("-")
            elif base is None or impl == "bf16":
                cells.append(_f(r["tflops"]))
            else:
                cells.append(f"{_f(r['tflops'])} ({r['tflops'] / base['tflops']:.2f}x)")
        rows.append(cells)
    print_table(f"Linear fwd+bwd (module), TFLOP/s (speed-up over bf16){tag}", ["shape", *impls], rows)
    diffs = [[shape, *("/".join(f"{v:.1e}" for v in linear[(shape, i)]["calc_diff_out_dx_dw"])
                       if (shape, i) in linear else "-" for i in impls)] for shape in shapes]  # fmt: skip
    print_table(f"calc_diff out/dX/dW vs FP32 autograd (< 1e-3 for FP8){tag}", ["shape", *impls], diffs)

    phases = {(r["shape"], r["impl"], r["phase"]): r for r in data["phases"]}
    rows = []
    for shape in shapes:
        for phase in PHASES:
            cells = [shape, phase]
            for impl in impls:
                r = phases.get((shape, impl, phase))
                cells.append("-" if r is None else f"{_f(r['tflops'])} ({_f(r['tflops_gemm'])})")
            rows.append(cells)
    print_table(f"GEMMs one at a time, TFLOP/s with quantization (GEMM only){tag}", ["shape", "GEMM", *impls], rows)

    if data["quant"]:
        columns = list(dict.fromkeys(k for r in data["quant"] for k in r if k not in ("kernel", "shape")))
        rows = [[r["kernel"], r["shape"], *(_f(r.get(c)) for c in columns)] for r in data["quant"]]
        print_table(f"Quantization, GB/s{tag}", ["kernel", "shape", *columns], rows)
    if data["sft"]:
        rows = [[r["mode"], str(r["linears_in_fp8"]), _f(r["ms/step"]), _f(r["tokens/s"])] for r in data["sft"]]
        print_table(f"SFT-like step (Llama, bf16 autocast, AdamW){tag}", ["mode", "FP8 Linears", "ms/step",
                                                                           "tokens/s"], rows)  # fmt: skip
    for s in data["skipped"]:
        print(f"skipped {s['what']}: {s['why']}")
    for note in data["notes"]:
        print(f"note: {note}")


def check_targets(data: dict, emulation: bool) -> list[dict]:
    """The spec's targets, PASS / FAIL / NOT MEASURED, from the figures of this run."""
    if emulation:
        return [{"target": "FP8 speed targets", "status": "NOT MEASURED", "detail": "CPU emulation"}]
    targets = []
    linear = {(r["shape"], r["impl"]): r for r in data["linear"]}
    phases = {(r["shape"], r["impl"], r["phase"]): r for r in data["phases"]}
    for shape in dict.fromkeys(r["shape"] for r in data["linear"]):
        base = linear.get((shape, "bf16"))
        ours = {i: r for (s, i), r in linear.items() if s == shape and i.startswith("fp8:")}
        if base is None or not ours:
            targets.append({"target": f"fp8 >= {SPEEDUP_TARGET}x bf16 at {shape}", "status": "NOT MEASURED"})
            continue
        best = max(ours, key=lambda i: ours[i]["tflops"])
        speedup = ours[best]["tflops"] / base["tflops"]
        targets.append({"target": f"fp8 Linear fwd+bwd >= {SPEEDUP_TARGET}x bf16 at {shape}",
                        "status": "PASS" if speedup >= SPEEDUP_TARGET else "FAIL",
                        "detail": f"{best} {speedup:.2f}x (" + ", ".join(
                            f"{i} {r['tflops'] / base['tflops']:.2f}x" for i, r in ours.items()) + ")"})  # fmt: skip
        for kind in ("tflops", "tflops_gemm"):
            ours_w = [phases[(shape, i, "wgrad")][kind] for i in ours if (shape, i, "wgrad") in phases]
            theirs = {i: r[kind] for (s, i, p), r in phases.items() if s == shape and p == "wgrad" and "torchao" in i}
            what = "wgrad with quantization" if kind == "tflops" else "wgrad GEMM only"
            if not ours_w or not theirs:
                targets.append({"target": f"{what} >= torchao at {shape}", "status": "NOT MEASURED"})
                continue
            best_theirs = max(theirs.values())
            targets.append(
                {
                    "target": f"{what} >= torchao at {shape}",
                    "status": "PASS" if max(ours_w) >= best_theirs else "FAIL",
                    "detail": f"ours {max(ours_w):.0f} TFLOP/s ({max(ours_w) / FP8_DENSE_PEAK_TFLOPS:.0%} of "
                    f"{FP8_DENSE_PEAK_TFLOPS:.0f}), torchao "
                    + ", ".join(f"{i} {v:.0f} ({v / FP8_DENSE_PEAK_TFLOPS:.0%})" for i, v in theirs.items()),
                }
            )
    return targets


# ------------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--quick", action="store_true", help="one Linear shape, smaller quantization tensor")
    parser.add_argument(
        "--cpu-smoke",
        action="store_true",
        help="CPU: smallest shapes through every code path (reference, Triton interpreter)",
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    parser.add_argument("--json", default=None, help="write every figure to this JSON file")
    parser.add_argument("--budget-s", type=float, default=None, help="skip measurements once this is spent")
    parser.add_argument("--impls", default=None, help="comma-separated implementations to run (default: all)")
    parser.add_argument(
        "--torchao-autotune",
        choices=["full", "small"],
        default="full",
        help="torchao activation-quantizer autotune configs: all 45, or 8 (fits a short lease)",
    )
    parser.add_argument("--no-torchao", action="store_true", help="leave torchao out")
    parser.add_argument("--no-sft", action="store_true", help="leave the SFT step out")
    parser.add_argument("--report", metavar="JSON", help="only print the tables of an earlier run's --json file")
    args = parser.parse_args()  # fmt: skip
    if args.report:
        data = json.loads(Path(args.report).read_text())
        print(
            f"FP8 benchmark of {data['meta'].get('device')}: torch {data['meta'].get('torch')}, "
            f"triton {data['meta'].get('triton')}, torchao {data['meta'].get('torchao')}"
        )
        emulation = data["meta"].get("emulation", False)
        report(data, emulation)
        print_targets(data.get("targets") or check_targets(data, emulation))  # a run cut short has none yet
        return
    if args.cpu_smoke:
        args.device = "cpu"
        # Before any Triton kernel is defined: ours (triton_kernels.py) and torchao's run in the interpreter.
        os.environ["TRITON_INTERPRET"] = "1"
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    emulation = device.type != "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    elif args.cpu_smoke:
        torch.set_num_threads(1)
    budget = Budget(args.budget_s)
    meta = {
        "device": torch.cuda.get_device_name() if use_cuda else f"CPU ({platform.processor() or platform.machine()})",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": _version("triton"),
        "torchao": _version("torchao"),
        "emulation": emulation,
        "argv": sys.argv[1:],
    }
    label = "CPU EMULATION: correctness only, not FP8 speed" if emulation else meta["device"]
    print(f"FP8 benchmark on {device} ({label}); torch {torch.__version__}, triton {meta['triton']}, "
          f"torchao {meta['torchao']}", flush=True)  # fmt: skip
    results = Results(args.json, meta)
    impls = selected(build_impls(device, args, results), args.impls)
    for impl in impls:
        for note in getattr(impl, "notes", []):
            results.data["notes"].append(f"{impl.name}: {note}")
    print("implementations: " + ", ".join(i.name for i in impls), flush=True)
    reps = {"warmup": 5, "iters": 20} if use_cuda else {"warmup": 1, "iters": 3}

    if emulation:
        primary = SMOKE_SHAPES if args.cpu_smoke else (CPU_LINEAR_SHAPES[:1] if args.quick else CPU_LINEAR_SHAPES)
        extra: list = []
    else:
        primary = GPU_PRIMARY_SHAPES[:1] if args.quick else GPU_PRIMARY_SHAPES
        extra = [] if args.quick else GPU_EXTRA_SHAPES
    slow = [i for i in impls if i.name == "torchao:triton"]  # its Triton GEMMs autotune per shape: measured later
    first = [i for i in impls if i not in slow]

    def unit(what: str, need_s: float, fn: Callable[[], None]) -> None:
        if budget.left() < need_s:
            results.skip(what, f"time budget ({budget.left():.0f} s left, needs ~{need_s:.0f} s)")
            return
        start = time.monotonic()
        try:
            fn()
        except Exception as error:  # record and go on: one broken implementation must not hide the others
            results.skip(what, f"failed: {type(error).__name__}: {error}"[:400])
        finally:
            free(device)
        print(f"  {what}: {time.monotonic() - start:.1f} s", flush=True)

    for shape in primary:
        for impl in first:
            unit(f"linear {impl.name} {shape}", 10, lambda i=impl, s=shape: bench_linear_unit(i, s, device, results,
                                                                                              reps))  # fmt: skip
    m, k = (256, 256) if args.cpu_smoke else (1024, 1024) if emulation or args.quick else (8192, 8192)
    unit("quantization", 10, lambda: bench_quant(m, k, impls, device, results, reps))
    if not args.no_sft:
        for impl in first:
            if args.cpu_smoke and "[interp]" in impl.name:
                continue  # the interpreter would take minutes over a whole model
            unit(f"sft {impl.name}", 15, lambda i=impl: bench_sft_mode(i, device, results, args.cpu_smoke))
    for shape in primary:
        for impl in slow:
            unit(f"linear {impl.name} {shape}", 30, lambda i=impl, s=shape: bench_linear_unit(i, s, device, results,
                                                                                              reps))  # fmt: skip
    for shape in extra:
        for impl in first:
            unit(f"linear {impl.name} {shape}", 10, lambda i=impl, s=shape: bench_linear_unit(i, s, device, results,
                                                                                              reps))  # fmt: skip
    results.data["targets"] = check_targets(results.data, emulation)
    results.save()
    report(results.data, emulation)
    print_targets(results.data["targets"])


def print_targets(targets: list[dict]) -> None:
    print()
    for t in targets:
        print(f"TARGET {t['status']:12} {t['target']}" + (f": {t['detail']}" if t.get("detail") else ""))


@functools.cache
def _version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return None


if __name__ == "__main__":
    main()
