"""Swap a model's attention and MLP Linears for FP8 Linears in place, and back.

Only modules whose type is exactly `nn.Linear` are candidates. The output head (`lm_head`, score/classifier
heads) and MoE routers stay in high precision, as in DeepSeek-V3; embeddings and norms are never Linears, so
they are never touched. Parameters are shared, not copied, so the state dict, `save_pretrained` and any
optimizer already built see the same tensors. Every Linear left out is listed, with its reason, in the returned
report and in one warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from posttrain.model.fp8.gemm import check_backend
from posttrain.model.fp8.linear import Fp8Linear
from posttrain.model.fp8.quant import ScaleMode, check_scale_mode

FilterFn = Callable[[nn.Module, str], bool]

HEAD_NAMES = ("lm_head", "score", "classifier", "v_head", "qa_outputs")
ROUTER_NAMES = ("gate", "router", "shared_expert_gate")


@dataclass
class Fp8Report:
    """What `convert_to_fp8` did: module names converted, and Linears left out with the reason."""

    converted: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    backend: str = "auto"
    scale: str = "pow2"

    def to_dict(self) -> dict:
        """JSON-ready form, for a stage manifest."""
        return {"converted": list(self.converted), "skipped": dict(self.skipped), "backend": self.backend,
                "scale": self.scale}  # fmt: skip

    def summary(self) -> str:
        """One line: how many Linears run in FP8 and how many were left out."""
        return f"FP8: {len(self.converted)} Linear layers converted, {len(self.skipped)} left in high precision"


def _skip_reason(name: str, module: nn.Module, head: nn.Module | None, filter_fn: FilterFn | None) -> str | None:
    """Why this Linear stays in high precision, or None to convert it."""
    leaf = name.rsplit(".", 1)[-1]
    if not name:
        return "the root module cannot be replaced in place; use Fp8Linear.from_linear"
    if module is head or leaf in HEAD_NAMES:
        return "output head: kept in high precision (DeepSeek-V3 recipe)"
    if leaf in ROUTER_NAMES:
        return "MoE router: kept in high precision (DeepSeek-V3 recipe)"
    if type(module) is not nn.Linear:
        return f"{type(module).__name__} subclasses nn.Linear with its own forward; only plain nn.Linear converts"
    if filter_fn is not None and not filter_fn(module, name):
        return "excluded by filter_fn"
    if module.weight.device.type == "meta":
        return "weight is on the meta device (not materialised)"
    return None


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, leaf, new)


def convert_to_fp8(
    model: nn.Module,
    filter_fn: FilterFn | None = None,
    backend: str = "auto",
    scale: ScaleMode = "pow2",
) -> Fp8Report:
    """Replace the attention and MLP `nn.Linear`s of `model` with `Fp8Linear`, in place.

    Args:
        model: any nn.Module, typically a transformers causal LM (on CPU or GPU, before or after building the
            optimizer: parameters are shared, not copied).
        filter_fn: `(module, name) -> bool`; False keeps that Linear in high precision.
        backend: "auto" (GPU kernels on an FP8 GPU, the reference emulation elsewhere), "reference",
            "triton" or "scaled_mm".
        scale: "pow2" (default: power-of-two tile scales) or "fp32".

    Returns:
        Fp8Report with the converted module names and the skipped ones with reasons; a warning lists the skipped.

    Raises:
        ValueError: unknown backend or scale, or a GPU backend asked for where it cannot run.
    """
    check_backend(backend)
    check_scale_mode(scale)
    report = Fp8Report(backend=backend, scale=scale)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    replacements: dict[int, Fp8Linear] = {}  # a Linear shared under several names converts once
    for name, module in list(model.named_modules(remove_duplicate=False)):
        if isinstance(module, Fp8Linear):  # converted earlier: converting twice is a no-op
            report.converted.append(name)
            continue
        if not isinstance(module, nn.Linear):
            continue
        reason = _skip_reason(name, module, head, filter_fn)
        if reason:
            report.skipped[name] = reason
            continue
        if id(module) not in replacements:
            replacements[id(module)] = Fp8Linear.from_linear(module, backend=backend, scale=scale)
        _set_submodule(model, name, replacements[id(module)])
        report.converted.append(name)
    _warn_about(report, model)
    return report


def _warn_about(report: Fp8Report, model: nn.Module) -> None:
    if report.skipped:
        listing = "; ".join(f"{name} ({reason})" for name, reason in report.skipped.items())
        warnings.warn(f"{report.summary()}. Left out: {listing}", stacklevel=3)
    if not report.converted:
        warnings.warn(f"FP8: no Linear layer of {type(model).__name__} was converted", stacklevel=3)
    non_fp32 = sorted(
        {str(p.dtype) for n in report.converted for p in model.get_submodule(n).parameters()} - {str(torch.float32)}
    )
    if non_fp32:
        warnings.warn(
            f"FP8: converted layers hold {', '.join(non_fp32)} weights, not FP32 master weights; load the model in "
            "float32 (and train with bf16 autocast) to follow the FP8 recipe",
            stacklevel=3,
        )


def convert_from_fp8(model: nn.Module) -> list[str]:
    """Turn every `Fp8Linear` of `model` back into a plain `nn.Linear` with the same parameters, in place.

    Returns:
        The names of the modules restored.
    """
    replacements: dict[int, nn.Linear] = {}
    restored = []
    for name, module in list(model.named_modules(remove_duplicate=False)):
        if isinstance(module, Fp8Linear) and name:
            replacements.setdefault(id(module), module.to_linear())
            _set_submodule(model, name, replacements[id(module)])
            restored.append(name)
    return restored


@contextmanager
def high_precision(model: nn.Module) -> Iterator[None]:
    """Run every Fp8Linear of `model` as a plain Linear inside the block (e.g. generation in GRPO, which DeepSeek-V3
    keeps in BF16 while the training GEMMs and the log-probs run in FP8)."""
    layers = [m for m in model.modules() if isinstance(m, Fp8Linear)]
    before = [m.fp8_enabled for m in layers]
    for m in layers:
        m.fp8_enabled = False
    try:
        yield
    finally:
        for m, enabled in zip(layers, before):
            m.fp8_enabled = enabled


def enable_fp8_training(model: nn.Module) -> Fp8Report:
    """`convert_to_fp8`, with `model.generate` wrapped to run the same layers in high precision: the training GEMMs
    and the old/reference log-probs share one FP8 forward, while sampling stays out of FP8, as in DeepSeek-V3."""
    import functools

    report = convert_to_fp8(model)
    generate = model.generate

    @functools.wraps(generate)
    def generate_in_high_precision(*args, **kwargs):
        with high_precision(model):
            return generate(*args, **kwargs)

    model.generate = generate_in_high_precision
    return report
