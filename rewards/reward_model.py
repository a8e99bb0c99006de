"""The `reward_model` reward: scores from any `AutoModelForSequenceClassification` on chat-templated pairs.

Each (prompt, completion) pair is rendered with the model's chat template (the prompt's messages plus the
completion as the assistant turn), truncated from the left so the end of the answer is always read, and scored in
batches. A one-output model's logit is the reward (Bradley-Terry reward models); a model with several labels gives
the probability of `label`. The model is loaded once per process, on the first call. A causal LM (a folder with no
classification head, `embedded`, `tiny`) is refused with the stage type that trains one: `type: reward_model`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal

from rewards.base import completion_texts, prompt_messages, reward, row_value
from rewards.model_utils import batches, chat_text, check_model, torch_dtype, with_reference


@lru_cache(maxsize=2)
def load_classifier(model: str, dtype: str | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) for a sequence classifier, cached per process."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from posttrain.model.loading import resolve_model

    path = resolve_model(model)
    problem = classifier_problem(model, path)
    if problem:
        from posttrain.errors import ModelError

        raise ModelError(f"reward_model: model: {problem}")
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.truncation_side = "left"
    classifier = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch_dtype(dtype)).eval()
    classifier.config.pad_token_id = tokenizer.pad_token_id
    return classifier, tokenizer


CAUSAL_LM_HINT = (
    "it has no classification head; train a reward model from it with a `type: reward_model` stage and use that "
    "stage's output (model: ${stages.NAME.model})"
)


def classifier_problem(spec: str, path: str | None = None) -> str | None:
    """Why `spec` is not a sequence classifier, read from its config.json (no weights loaded), or None. `path` is the
    resolved folder when known; a hub id not cached locally is not checked here."""
    import json
    import os

    from posttrain.model.loading import EMBEDDED, TINY

    if spec in (EMBEDDED, TINY):
        return f"'{spec}' is a causal LM: {CAUSAL_LM_HINT}"
    config = os.path.join(path or os.path.expanduser(spec), "config.json")
    if not os.path.isfile(config):
        return None
    with open(config, encoding="utf-8") as f:
        architectures = json.load(f).get("architectures") or []
    if architectures and not any(a.endswith("ForSequenceClassification") for a in architectures):
        return f"'{spec}' is a {architectures[0]}: {CAUSAL_LM_HINT}"
    return None


def _validate(params: dict[str, Any], ctx: Any = None) -> list[str]:
    problems = check_model("model", params["model"], ctx)
    pending = ctx is not None and ctx.is_pending(params["model"])
    if not problems and not pending and (problem := classifier_problem(params["model"])):
        problems.append(f"model: {problem}")
    for key in ("batch_size", "max_length"):
        if params[key] < 1:
            problems.append(f"{key}: must be at least 1, got {params[key]}")
    return problems


@reward(
    "reward_model",
    kind="model",
    columns=lambda p: ("prompt", p["reference"]) if p.get("reference") else ("prompt",),
    validate=_validate,
)
def reward_model_reward(
    completions: list,
    prompts: list | None = None,
    *,
    model: str,
    label: int = 1,
    batch_size: int = 8,
    max_length: int = 2048,
    dtype: Literal["float32", "bfloat16", "float16"] | None = None,
    reference: str | None = None,
    **kwargs,
) -> list[float | None]:
    """A sequence classifier's score of each (prompt, completion) pair: its logit, or P(label) with several labels.

    Args:
        completions: responses, strings or chat message lists.
        prompts: the prompts (TRL passes them; a dataset's `prompt` column is used otherwise).
        model: a local folder, hub id or 'embedded'-style name of an AutoModelForSequenceClassification.
        label: the class whose probability is the reward when the model has several labels.
        batch_size / max_length: pairs per forward pass; tokens kept per pair (from the end).
        dtype: float32, bfloat16 or float16; null keeps the checkpoint's.
        reference: a column (e.g. answer) shown to the model with the prompt (`Reference answer: ...`), for a
            reward model trained with the same `reference:` setting; a row without one scores None.
    """
    import torch

    classifier, tokenizer = load_classifier(model, dtype)
    texts = completion_texts(completions)
    prompts = prompts if prompts is not None else kwargs.get("prompt")
    if reference is not None and kwargs.get(reference) is None:
        raise ValueError(f"reward_model: reference: the data has no '{reference}' column to show the model")
    pairs, scored = [], []
    for i, t in enumerate(texts):
        messages = prompt_messages(row_value(prompts, i, len(texts)))
        if reference is not None:
            ref = row_value(kwargs[reference], i, len(texts))
            if ref is None or str(ref) == "":
                continue  # no reference to read: None
            messages = with_reference(messages, ref)
        pairs.append(chat_text(tokenizer, messages + [{"role": "assistant", "content": t}]))
        scored.append(i)
    scores: list[float] = []
    for _, chunk in batches(pairs, batch_size):
        enc = tokenizer(
            list(chunk), return_tensors="pt", padding=True, truncation=True, max_length=max_length,
            add_special_tokens=False,
        )  # fmt: skip
        with torch.inference_mode():
            logits_BL = classifier(**enc).logits.float()
        num_labels = logits_BL.shape[-1]
        if num_labels == 1:
            scores.extend(logits_BL[:, 0].tolist())
        elif label < num_labels:
            scores.extend(logits_BL.softmax(-1)[:, label].tolist())
        else:
            raise ValueError(f"label is {label} but model '{model}' has {num_labels} labels (0..{num_labels - 1})")
    out: list[float | None] = [None] * len(texts)
    for i, score in zip(scored, scores):
        out[i] = score
    return out
