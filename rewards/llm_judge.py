"""The `llm_judge` reward: a causal LM asked "yes or no?", scored by the probability of "yes" in its next token.

In `reference` mode the judge sees the question, the free-form reference answer (`answer` column) and the response,
and is asked whether the response gives the same answer; in `rubric` mode it sees only the question and the
response and is asked whether it answers well. The question is rendered with the judge's chat template and one
forward pass reads the next-token distribution: the reward is P(yes) / (P(yes) + P(no)) summed over the
single-token spellings of each word ("yes", "Yes", " yes", ...), or the raw P(yes) with `normalize: false`. No text
is generated or parsed. Prompts are batched with left padding. Any causal LM works, the embedded default included.
"""

from __future__ import annotations

import string
from functools import lru_cache
from typing import Any, Literal

from rewards.base import completion_texts, final_answer_text, reward, row_value
from rewards.model_utils import batches, chat_text, check_model, question_text, torch_dtype

# Phrased for small judges: of the phrasings we tried, this one ranked correct above wrong answers most often with
# the embedded 135M model (which is still a weak judge: its P(yes) moves by a few hundredths).
REFERENCE_TEMPLATE = (
    "Question: {question}\nThe correct answer is: {reference}\nStudent's answer: {response}\n"
    "Does the student's answer match the correct answer? Reply with only yes or no."
)
RUBRIC_TEMPLATE = (
    "Question: {question}\nAnswer: {response}\nIs this answer correct, helpful and clear? Reply with only yes or no."
)
PLACEHOLDERS = {"question", "response", "reference"}
YES = ("yes", "Yes", "YES", " yes", " Yes", " YES")
NO = ("no", "No", "NO", " no", " No", " NO")


@lru_cache(maxsize=2)
def load_judge(model: str, dtype: str | None = None) -> tuple[Any, Any, list[int], list[int]]:
    """(model, tokenizer, yes token ids, no token ids), cached per process."""
    import torch

    from posttrain.model.loading import load_model_and_tokenizer

    if dtype is None and not torch.cuda.is_available():
        dtype = "float32"  # bf16 on CPU moves P(yes) by more than a small judge's margin between answers
    judge, tokenizer = load_model_and_tokenizer(model, dtype=torch_dtype(dtype))
    judge.eval()
    tokenizer.padding_side = "left"

    def single_tokens(words: tuple[str, ...]) -> list[int]:
        ids = [tokenizer.encode(w, add_special_tokens=False) for w in words]
        return sorted({i[0] for i in ids if len(i) == 1})

    yes, no = single_tokens(YES), single_tokens(NO)
    if not yes or not no:
        raise ValueError(f"judge '{model}' has no single token for 'yes' or 'no'; use another judge model")
    return judge, tokenizer, yes, no


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def _validate(params: dict[str, Any]) -> list[str]:
    problems = check_model("model", params["model"])
    template = params["template"]
    if template is not None:
        try:
            fields = _fields(template)
        except ValueError as e:
            return [*problems, f"template: not a valid format string ({e}); write placeholders as {{response}}"]
        unknown = fields - PLACEHOLDERS
        if unknown:
            problems.append(f"template: unknown placeholders {sorted(unknown)}; use {sorted(PLACEHOLDERS)}")
        if "response" not in fields:
            problems.append("template: must contain {response}")
        if params["mode"] == "reference" and "reference" not in fields:
            problems.append("template: mode 'reference' needs {reference} in the template (or use mode: rubric)")
    if params["batch_size"] < 1:
        problems.append(f"batch_size: must be at least 1, got {params['batch_size']}")
    return problems


def judge_yes_probability(prompts_text: list[str], model: str, dtype: str | None, normalize: bool, batch_size: int,
                          max_length: int) -> list[float]:  # fmt: skip
    """P(yes) (or P(yes)/(P(yes)+P(no))) of the judge's next token after each chat-rendered judge prompt."""
    import torch

    judge, tokenizer, yes_ids, no_ids = load_judge(model, dtype)
    texts = [chat_text(tokenizer, [{"role": "user", "content": p}], add_generation_prompt=True) for p in prompts_text]
    out: list[float] = []
    for _, chunk in batches(texts, batch_size):
        enc = tokenizer(
            list(chunk), return_tensors="pt", padding=True, truncation=True, max_length=max_length,
            add_special_tokens=False,
        )  # fmt: skip
        position_ids_BT = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            logits_BV = judge(**enc, position_ids=position_ids_BT).logits[:, -1, :].float()
        probs_BV = logits_BV.softmax(-1)
        p_yes_B = probs_BV[:, yes_ids].sum(-1)
        p_no_B = probs_BV[:, no_ids].sum(-1)
        out.extend((p_yes_B / (p_yes_B + p_no_B) if normalize else p_yes_B).tolist())
    return out


@reward(
    "llm_judge",
    kind="model",
    columns=lambda p: ("prompt", "answer") if p["mode"] == "reference" else ("prompt",),
    validate=_validate,
)
def llm_judge_reward(
    completions: list,
    prompts: list | None = None,
    answer: list | None = None,
    *,
    model: str = "embedded",
    mode: Literal["reference", "rubric"] = "reference",
    template: str | None = None,
    normalize: bool = True,
    answer_only: bool = True,
    batch_size: int = 8,
    max_length: int = 2048,
    dtype: Literal["float32", "bfloat16", "float16"] | None = None,
    **kwargs,
) -> list[float | None]:
    """The judge model's probability that the response matches the reference (or answers well), in [0, 1].

    Args:
        completions: responses, strings or chat message lists.
        prompts: the prompts (TRL passes them; a dataset's `prompt` column is used otherwise).
        answer: free-form reference answers (mode 'reference'); a row without one scores None.
        model: the judge, a causal LM: 'embedded', a local folder or a hub id.
        mode: 'reference' or 'rubric'. template: the judge prompt with {question}, {response} and, in reference
            mode, {reference}; null uses the built-in one for the mode.
        normalize: P(yes)/(P(yes)+P(no)) rather than P(yes).
        answer_only: show the judge only the part after `</think>`.
        batch_size / max_length: prompts per forward pass; tokens kept per prompt (from the end).
        dtype: float32, bfloat16 or float16; null is float32 on CPU and the checkpoint's dtype on GPU.
    """
    template = template or (REFERENCE_TEMPLATE if mode == "reference" else RUBRIC_TEMPLATE)
    texts = completion_texts(completions)
    prompts = prompts if prompts is not None else kwargs.get("prompt")
    rows, judge_prompts = [], []
    for i, text in enumerate(texts):
        reference = row_value(answer, i, len(texts))
        if mode == "reference" and (reference is None or not str(reference).strip()):
            continue
        response = final_answer_text(text) if answer_only else text
        fields = {"question": question_text(row_value(prompts, i, len(texts))), "response": response.strip()}
        judge_prompts.append(template.format(**fields, reference=str(reference).strip()))
        rows.append(i)
    out: list[float | None] = [None] * len(texts)
    scores = judge_yes_probability(judge_prompts, model, dtype, normalize, batch_size, max_length) if rows else []
    for i, score in zip(rows, scores):
        out[i] = score
    return out
