"""Model-based rewards on real small models: a tiny random classifier saved to disk, MiniLM, and the embedded judge."""

from __future__ import annotations

import pytest

from rewards import RewardError, build_reward, check_reward_specs
from rewards.embedding_match import embedding_match_reward
from rewards.llm_judge import llm_judge_reward
from rewards.reward_model import reward_model_reward

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _tiny_classifier(path, num_labels: int) -> str:
    """A random 2-layer Llama sequence classifier with a byte-level BPE tokenizer trained on the spot."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForSequenceClassification, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<pad>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(["What is 2 + 2? The answer is 4. user assistant system"] * 10, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", eos_token="<|im_end|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_labels=num_labels,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return str(path)


@pytest.fixture(scope="module")
def scalar_rm(tmp_path_factory) -> str:
    return _tiny_classifier(tmp_path_factory.mktemp("rewards_rm1"), num_labels=1)


@pytest.fixture(scope="module")
def binary_rm(tmp_path_factory) -> str:
    return _tiny_classifier(tmp_path_factory.mktemp("rewards_rm2"), num_labels=2)


PROMPTS = [[{"role": "user", "content": "What is 2 + 2?"}], "What is 2 + 3?", [{"role": "user", "content": "Hi"}]]
COMPLETIONS = ["The answer is 4.", [{"role": "assistant", "content": "It is 5"}], "Hello there, what a long reply."]


def test_reward_model_scores_chat_pairs_batched(scalar_rm):
    one = reward_model_reward(COMPLETIONS, PROMPTS, model=scalar_rm, batch_size=1)
    many = reward_model_reward(COMPLETIONS, PROMPTS, model=scalar_rm, batch_size=8)
    assert all(isinstance(s, float) for s in one)
    assert many == pytest.approx(one, abs=1e-5)  # padding does not change a score
    other_prompt = reward_model_reward(COMPLETIONS[:1], ["Something else entirely"], model=scalar_rm)
    assert other_prompt[0] != pytest.approx(one[0], abs=1e-6)  # the prompt is part of what is scored


def test_reward_model_with_labels_gives_probabilities(binary_rm):
    good = reward_model_reward(COMPLETIONS, PROMPTS, model=binary_rm)
    bad = reward_model_reward(COMPLETIONS, PROMPTS, model=binary_rm, label=0)
    assert all(0.0 < g < 1.0 for g in good)
    assert [g + b for g, b in zip(good, bad)] == pytest.approx([1.0] * 3)
    reward = build_reward([{"name": "reward_model", "model": binary_rm, "label": 5}])
    with pytest.raises(RewardError, match=r"reward 'reward_model' failed on row 0: .*has 2 labels"):
        reward(COMPLETIONS, prompts=PROMPTS)


def test_reward_model_specs_are_checked_without_loading():
    problems = check_reward_specs([{"name": "reward_model", "model": "/no/such/model"}], columns={"answer"})
    assert problems == [
        "rewards[0].model: model path '/no/such/model' does not exist; use 'embedded' or an existing local folder",
        "rewards[0] (reward_model): needs the dataset column 'prompt'; the data has 'answer'",
    ]


def test_embedding_match_with_packaged_minilm():
    completions = [
        "The capital of France is Paris.",
        "Bananas are a good source of potassium.",
        "<think>France... capital... Paris</think>Paris is the capital of France.",
        "anything",
        "",
    ]
    references = ["Paris is the capital of France."] * 3 + [None, "Paris is the capital of France."]
    scores = embedding_match_reward(completions, references)
    assert scores[0] > 0.9 and scores[2] > 0.95
    assert scores[1] < 0.3
    assert scores[3] is None
    assert -1.0 <= scores[4] <= 1.0
    assert embedding_match_reward(["x"], [""]) == [None]


def test_llm_judge_template_is_checked():
    problems = check_reward_specs(
        [
            {"name": "llm_judge", "template": "Is {answer} right?"},
            {"name": "llm_judge", "mode": "rubric", "template": "Q: {question} A: {response} ok?"},
            {"name": "llm_judge", "template": "Q: {question} A: {response} ok?"},
        ]
    )
    assert problems == [
        "rewards[0].template: unknown placeholders ['answer']; use ['question', 'reference', 'response']",
        "rewards[0].template: must contain {response}",
        "rewards[0].template: mode 'reference' needs {reference} in the template (or use mode: rubric)",
        "rewards[2].template: mode 'reference' needs {reference} in the template (or use mode: rubric)",
    ]
    assert check_reward_specs([{"name": "llm_judge", "mode": "rubric"}], columns={"prompt"}) == []
    assert "needs the dataset column 'answer'" in check_reward_specs(["llm_judge"], columns={"prompt"})[0]


JUDGE_PROMPTS = [
    "What is 12+7?",
    "What is 12+7?",
    "What is the capital of France?",
    "What is the capital of France?",
    "What color is the sky on a clear day?",
    "What color is the sky on a clear day?",
]
JUDGE_COMPLETIONS = [
    "12 + 7 = 19",
    "12 + 7 = 21",
    "The capital of France is Paris.",
    "The capital of France is Berlin.",
    "It is blue.",
    "It is green.",
]
JUDGE_ANSWERS = ["19", "19", "Paris", "Paris", "blue", "blue"]


@pytest.mark.slow
def test_llm_judge_with_the_embedded_model():
    prompts = [[{"role": "user", "content": p}] for p in JUDGE_PROMPTS]
    scores = llm_judge_reward(JUDGE_COMPLETIONS, prompts, JUDGE_ANSWERS, batch_size=8)
    assert all(0.0 < s < 1.0 for s in scores)
    one_by_one = llm_judge_reward(JUDGE_COMPLETIONS[2:4], prompts[2:4], JUDGE_ANSWERS[2:4], batch_size=1)
    assert one_by_one == pytest.approx(scores[2:4], abs=1e-4)  # left padding changes nothing
    correct, wrong = scores[0::2], scores[1::2]
    # a 135M judge is weak (P(yes) moves by a few hundredths) but ranks these easy pairs right on average
    assert sum(correct) > sum(wrong)
    raw = llm_judge_reward(JUDGE_COMPLETIONS[:2], prompts[:2], JUDGE_ANSWERS[:2], normalize=False)
    assert all(0.0 < r < s for r, s in zip(raw, scores[:2]))
    assert llm_judge_reward(["19"], prompts[:1], [None]) == [None]  # no reference: not applicable
    rubric = llm_judge_reward(JUDGE_COMPLETIONS[:1], prompts[:1], mode="rubric")
    assert 0.0 < rubric[0] < 1.0
