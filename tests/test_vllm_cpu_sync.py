"""`load_weights_into_vllm`: perturb the embedded model's weights, push them into an in-process vLLM engine, and
check that vLLM's prompt logprobs now match transformers' logprobs of the perturbed model (and no longer the
original ones). On CPU this exercises the repacked GEMM weights of vllm-cpu, including the tied LM head."""

from __future__ import annotations

import contextlib
import gc

import pytest
import torch

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

TEXT = (
    "The quick brown fox jumps over the lazy dog. In 1905 Albert Einstein published four papers that changed "
    "physics: on the photoelectric effect, Brownian motion, special relativity and mass-energy equivalence."
)


def _hf_logprobs(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1].float()
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]


def _vllm_logprobs(llm, ids: list[int]) -> torch.Tensor:
    from vllm import SamplingParams

    out = llm.generate([{"prompt_token_ids": ids}], SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)
    return torch.tensor([d[t].logprob for d, t in zip(out[0].prompt_logprobs[1:], ids[1:])])


def test_trl_patch_is_idempotent():
    pytest.importorskip("trl")
    from trl.generation.vllm_generation import VLLMGeneration

    from posttrain.generation.vllm_cpu_sync import patch_trl_colocate_sync

    assert patch_trl_colocate_sync() and patch_trl_colocate_sync()
    assert getattr(VLLMGeneration.sync_weights, "_posttrain_vllm_cpu_sync", False)


def test_synced_weights_match_transformers(monkeypatch):
    pytest.importorskip("vllm")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from posttrain.generation.vllm_cpu_sync import load_weights_into_vllm
    from posttrain.model.loading import embedded_path

    # The sync needs the engine core in this process.
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    monkeypatch.setenv("VLLM_LOGGING_LEVEL", "WARNING")
    import vllm.envs

    if hasattr(vllm.envs, "disable_envs_cache"):
        vllm.envs.disable_envs_cache()
    from vllm import LLM

    path = str(embedded_path())
    ids = AutoTokenizer.from_pretrained(path)(TEXT)["input_ids"]
    llm = LLM(model=path, dtype="float32", enforce_eager=True, gpu_memory_utilization=0.3, seed=0, max_model_len=512)
    try:
        hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        base = _hf_logprobs(hf, ids)
        assert (_vllm_logprobs(llm, ids) - base).abs().max() < 1e-3

        torch.manual_seed(0)
        with torch.no_grad():
            for p in hf.parameters():  # every weight, the tied embedding / LM head included
                p.add_(torch.randn_like(p) * p.std() * 0.05)
        perturbed = _hf_logprobs(hf, ids)
        assert (perturbed - base).abs().mean() > 0.1, "the perturbation is too small to tell the models apart"

        load_weights_into_vllm(llm, hf.named_parameters())
        synced = _vllm_logprobs(llm, ids)
        assert (synced - perturbed).abs().max() < 1e-2, (synced - perturbed).abs().max()

        # A second sync (TRL syncs every step) must work on the already-reloaded engine too.
        with torch.no_grad():
            hf.model.layers[3].mlp.down_proj.weight.zero_()
            hf.model.embed_tokens.weight.mul_(1.5)
        zeroed = _hf_logprobs(hf, ids)
        load_weights_into_vllm(llm, hf.named_parameters())
        assert (_vllm_logprobs(llm, ids) - zeroed).abs().max() < 1e-2
    finally:
        with contextlib.suppress(Exception):  # best effort
            llm.llm_engine.engine_core.shutdown()
        del llm
        gc.collect()
        # The in-process engine started a torch.distributed group of one; later tests must not inherit it.
        from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

        destroy_model_parallel()
        destroy_distributed_environment()
