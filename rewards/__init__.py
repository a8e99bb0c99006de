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
`my_pkg.my_mod:my_reward`. Each entry of a recipe's `rewards:` list is parsed into a typed `RewardEntry` whose
fields are built from the reward's signature (`rewards.entries`), so the recipe schema checks its settings like any
other field. `build_reward(entries)` turns the list into one `CombinedReward` that serves GRPO (as a single reward
function, or as `funcs` + `weights` for TRL) and rejection sampling (`per_reward`). Besides its settings, every entry
takes `weight` (default 1.0) and `on_error`: `raise` (default; the error names the reward and the row) or `skip`
(that row scores None and is counted in the reward's `num_errors` metric). `rewards.scoring.score_each` scores
generated samples row by row.
"""

from rewards.base import (
    REWARDS,
    Reward,
    RewardError,
    RewardFunction,
    RewardInfo,
    completion_text,
    describe_reward,
    reward,
)
from rewards.combine import BoundReward, CombinedReward, build_reward
from rewards.entries import RewardEntry, check_reward_choice, check_reward_columns, check_reward_specs, reward_names

__all__ = [
    "REWARDS",
    "BoundReward",
    "CombinedReward",
    "Reward",
    "RewardEntry",
    "RewardError",
    "RewardFunction",
    "RewardInfo",
    "build_reward",
    "check_reward_choice",
    "check_reward_columns",
    "check_reward_specs",
    "completion_text",
    "describe_reward",
    "reward",
    "reward_names",
]
