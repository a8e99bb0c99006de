"""Reward plugins for GRPO training and rejection sampling.

A reward is TRL's `reward_funcs` convention: `fn(completions, **columns) -> list[float | None]`, batched, with
`None` meaning "not applicable" (skipped, not counted as zero). Completions may be strings or chat message lists.
The signature of a reward function is its declaration:

- parameters between `completions` and `*` are dataset columns: required when they have no default
  (`def my_reward(completions, answer, **kwargs)` needs an `answer` column), optional otherwise;
- keyword-only parameters (after `*`) are its settings, configured from the YAML entry next to its name:
  `{name: code, timeout_s: 5, weight: 1.0}`; one without a default must be given;
- `**kwargs` takes every other column TRL passes (`prompts`, `completion_ids`, `trainer_state`, ...).

A reward is found, in order, by a short name registered with `@reward("name")` in this package, by a name that a
third-party package publishes in the entry-point group `posttrain.rewards`, or by a dotted path
`my_pkg.my_mod:my_reward`. `build_reward(specs)` turns the YAML list into one `CombinedReward` that serves GRPO
(as a single reward function, or as `funcs` + `weights` for TRL) and rejection sampling (`per_reward`). Besides its
settings, every entry takes `weight` (default 1.0) and `on_error`: `raise` (default; the error names the reward and
the row) or `skip` (that row scores None and is counted in the reward's `num_errors` metric).
"""

from posttrain.registry import Registry

REWARDS: Registry = Registry(
    "reward",
    "posttrain.rewards",
    modules=(
        "rewards.math_reward",
        "rewards.code_reward",
        "rewards.think_format",
        "rewards.length",
        "rewards.repetition",
        "rewards.language",
        "rewards.reward_model",
        "rewards.llm_judge",
        "rewards.embedding_match",
    ),
)

from rewards.base import RewardError, RewardInfo, completion_text, describe_reward, reward  # noqa: E402
from rewards.combine import BoundReward, CombinedReward, build_reward, check_reward_specs  # noqa: E402

__all__ = [
    "REWARDS",
    "BoundReward",
    "CombinedReward",
    "RewardError",
    "RewardInfo",
    "build_reward",
    "check_reward_specs",
    "completion_text",
    "describe_reward",
    "reward",
]
