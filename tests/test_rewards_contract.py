"""The reward contract: registry lookups, the third-party plugin, spec checking and the combined reward."""

from __future__ import annotations

import math

import pytest

from posttrain.errors import ConfigError
from rewards import REWARDS, RewardError, build_reward, check_reward_specs, describe_reward

BUILTIN = {
    "code", "embedding_match", "language", "length", "llm_judge", "math", "reasoning_gym", "repetition",
    "reward_model", "think_format",
}  # fmt: skip
PLUGIN_INSTALL = "pip install --no-deps --no-build-isolation -e tests/assets/rewards_plugin_pkg"


def constant_reward(completions: list, **kwargs) -> list[float | None]:
    return [0.5] * len(completions)


def flaky_reward(completions: list, **kwargs) -> list[float | None]:
    """Raises on any completion containing 'boom'."""
    for c in completions:
        if "boom" in c:
            raise ValueError("cannot score this one")
    return [1.0] * len(completions)


def wrong_length_reward(completions: list, **kwargs) -> list[float | None]:
    return [1.0]


def strict_signature_reward(completions: list, answer: list) -> list[float | None]:
    """No **kwargs: must receive only the columns it names."""
    return [float(c == a) for c, a in zip(completions, answer)]


class ScaledLength:
    """A class reward: settings go to __init__, instances are called."""

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    def __call__(self, completions: list, **kwargs) -> list[float | None]:
        return [self.scale * len(c) for c in completions]


HERE = __name__  # dotted paths below point into this module, however pytest imported it


def test_builtin_rewards_are_registered():
    assert set(REWARDS.names()) >= BUILTIN


def test_third_party_plugin_is_found_through_its_entry_point():
    if "shout" not in REWARDS.names():
        pytest.fail(f"the test plugin is not installed; run: {PLUGIN_INSTALL}")
    reward = build_reward([{"name": "shout"}, {"name": "keyword_count", "scale": 0.5, "weight": 2.0}])
    assert reward(["HELLO", "hi hi", ""], keyword=["x", "hi", "y"]) == [1.0, 2.0, 0.0]
    assert describe_reward(REWARDS.get("keyword_count")).columns() == ("keyword",)


def test_unknown_name_suggests_the_closest():
    problems = check_reward_specs([{"name": "math"}, {"name": "maths"}], where="recipes/x.yaml: stage 'rl'")
    assert len(problems) == 1
    assert problems[0].startswith("recipes/x.yaml: stage 'rl': rewards[1].name: unknown reward 'maths'")
    assert "did you mean 'math'" in problems[0]


def test_dotted_path_and_class_rewards():
    reward = build_reward(
        [{"name": f"{HERE}:constant_reward"}, {"name": f"{HERE}:ScaledLength", "scale": 2.0, "weight": 0.5}]
    )
    assert reward.names == ["constant_reward", "ScaledLength"]
    assert reward(["ab", ""]) == [0.5 + 0.5 * 4.0, 0.5]
    bad = check_reward_specs([{"name": f"{HERE}:ScaledLength", "scael": 2}])
    assert bad and "unknown setting of reward" in bad[0] and "did you mean 'scale'" in bad[0]


def test_spec_problems_are_all_reported_at_once():
    specs = [
        {"name": "code", "timeout_s": "fast", "memroy_mb": 10},
        {"name": "code", "timeout_s": -1},
        {"name": "math", "weight": "heavy", "on_error": "ignore"},
        {"name": "reward_model"},
        {"weight": 1.0},
        "think_format",
    ]
    problems = check_reward_specs(specs, where="r.yaml")
    text = "\n".join(problems)
    assert "r.yaml: rewards[0].timeout_s: expected a number, got 'fast'" in text
    assert "r.yaml: rewards[0].memroy_mb: unknown setting of reward 'code' (did you mean 'memory_mb'?)" in text
    assert "r.yaml: rewards[1].timeout_s: must be > 0 seconds, got -1" in text
    assert "r.yaml: rewards[2].weight: expected a number, got 'heavy'" in text
    assert "r.yaml: rewards[2].on_error: 'ignore' is not allowed; use 'raise' or 'skip'" in text
    assert "r.yaml: rewards[3].model: missing required setting of reward 'reward_model'" in text
    assert "r.yaml: rewards[4].name: missing" in text
    assert len(problems) == 7
    with pytest.raises(ConfigError) as e:
        build_reward(specs, where="r.yaml")
    assert e.value.problems == problems


def test_literal_and_optional_settings_are_type_checked():
    problems = check_reward_specs(
        [{"name": "code", "mode": "some"}, {"name": "think_format", "answer_tags": ["<a>"]}, {"name": "language",
         "language": "englsh"}]
    )  # fmt: skip
    assert problems[0] == "rewards[0].mode: 'some' is not allowed; use 'all_pass' or 'fraction'"
    assert problems[1].startswith("rewards[1].answer_tags: must be two non-empty tags")
    assert problems[2].startswith("rewards[2].language: unknown language or script 'englsh'")


def test_missing_columns_are_reported_against_the_data():
    specs = [{"name": "math"}, {"name": "code"}, {"name": "length", "mode": "shorter_correct"}, {"name": "length"}]
    problems = check_reward_specs(specs, columns={"prompt", "tests"}, where="w")
    assert problems == [
        "w: rewards[0] (math): needs the dataset column 'answer'; the data has 'prompt' or 'tests'",
        "w: rewards[2] (length): needs the dataset column 'answer'; the data has 'prompt' or 'tests'",
    ]
    assert check_reward_specs([{"name": "code"}], columns={"prompt", "test", "entry_point"}) == []


def test_weighted_sum_skips_none_and_keeps_all_none_rows_none():
    reward = build_reward(
        [{"name": "math", "weight": 1.0}, {"name": "think_format", "weight": 0.5}, {"name": f"{HERE}:constant_reward"}]
    )
    completions = ["<think>7</think>The answer is 7.", "The answer is 8.", "no answer"]
    scores = reward.per_reward(completions, answer=["7", "7", "Paris"])
    assert scores == {"math": [1.0, 0.0, None], "think_format": [1.0, 0.0, 0.0], "constant_reward": [0.5] * 3}
    assert reward.total(scores) == [2.0, 0.5, 0.5]
    only_math = build_reward(["math"])
    assert only_math(["42"], answer=["not math"]) == [None]


def test_trl_reward_funcs_view():
    reward = build_reward([{"name": "math"}, {"name": "math", "last_number_fallback": False, "weight": 0.3}])
    assert [f.__name__ for f in reward.funcs] == ["math", "math_2"]
    assert reward.weights == [1.0, 0.3]
    # TRL passes these extra keywords to every reward function
    extras = {"prompts": ["q"], "completion_ids": [[1, 2]], "trainer_state": object(), "log_metric": print}
    assert reward.funcs[1](["it is 3"], answer=["3"], **extras) == [0.0]
    assert reward.funcs[0](["it is 3"], answer=["3"], **extras) == [1.0]


def test_metrics_mean_std_frac_none_and_reset():
    reward = build_reward(["math"])
    reward(["1", "2", "3", "x"], answer=["1", "9", "3", "Paris"])
    metrics = reward.metrics()
    assert metrics["math/mean"] == pytest.approx(2 / 3)
    assert metrics["math/std"] == pytest.approx(math.sqrt(2 / 9))
    assert metrics["math/frac_none"] == 0.25
    assert metrics["math/seconds"] > 0
    assert math.isnan(reward.metrics()["math/mean"])  # reset by the previous read


def test_raising_reward_names_the_reward_and_row():
    reward = build_reward([{"name": f"{HERE}:flaky_reward"}])
    with pytest.raises(RewardError, match=r"reward 'flaky_reward' failed on row 2: ValueError: cannot score"):
        reward(["a", "b", "boom"])


def test_on_error_skip_scores_none_and_counts():
    reward = build_reward([{"name": f"{HERE}:flaky_reward", "on_error": "skip"}])
    assert reward(["a", "boom", "c", "boom!"]) == [1.0, None, 1.0, None]
    assert reward.metrics()["flaky_reward/num_errors"] == 2.0


def test_wrong_output_length_is_an_error_naming_the_reward():
    with pytest.raises(RewardError, match="'wrong_length_reward' must return one score per completion"):
        build_reward([f"{HERE}:wrong_length_reward"])(["a", "b"])


def test_reward_without_var_kwargs_gets_only_its_columns():
    reward = build_reward([f"{HERE}:strict_signature_reward"])
    assert reward(["x", "y"], answer=["x", "z"], prompts=["p", "q"], trainer_state=None) == [1.0, 0.0]
    assert check_reward_specs([f"{HERE}:strict_signature_reward"], columns={"prompt"}) == [
        f"rewards[0] ({HERE}:strict_signature_reward): needs the dataset column 'answer'; the data has 'prompt'"
    ]


def test_chat_message_completions_are_accepted():
    reward = build_reward(["math", "think_format"])
    completion = [{"role": "assistant", "content": "<think>2+2</think>\\boxed{4}"}]
    assert reward([completion], answer=["4"]) == [2.0]


def test_rewards_route_to_their_domains_and_log_each_domain():
    reward = build_reward([{"name": "math", "domains": ["math"]}, {"name": "think_format", "weight": 0.5}])
    completions = ["The answer is 4", "The answer is 5", "<think>x</think>ok", "def f(): pass"]
    columns = {"answer": ["4", "4", None, None], "domain": ["math", "math", "chat", "code"]}
    scores = reward.per_reward(completions, **columns)
    assert scores["math"] == [1.0, 0.0, None, None]  # not applicable outside its domain, and never called there
    assert reward.total(scores)[:2] == [1.0 + 0.5 * scores["think_format"][0], 0.5 * scores["think_format"][1]]
    metrics = reward.metrics()
    assert metrics["math/domain/math/mean"] == 0.5 and metrics["math/frac_none"] == 0.5
    assert "think_format/domain/chat/mean" in metrics and "think_format/domain/code/mean" in metrics
    with pytest.raises(RewardError, match=r"scores domains \['math'\], but the rows have no 'domain' column"):
        reward.per_reward(completions, answer=columns["answer"])
    assert check_reward_specs([{"name": "math", "domains": ["math"]}], columns={"prompt", "answer"}) == [
        "rewards[0] (math): needs the dataset column 'domain'; the data has 'answer' or 'prompt'"
    ]
