"""Recipe loading: references, overrides, ordering, and one clear line per problem."""

import pytest

from posttrain.errors import ConfigError
from posttrain.recipe.loader import load_recipe

CHAIN = """
name: chain
model: tiny
stages:
  - name: b
    type: echo
    input: ${stages.a.dataset}
    value: ${seed}
  - name: a
    type: echo
    value: 1
"""


def test_references_resolve_and_order_follows_them(write_recipe):
    recipe = load_recipe(write_recipe(CHAIN), run_dir="/r")
    assert recipe.stage_names == ["a", "b"]
    b = recipe.stage("b")
    assert b.config.input == "/r/chain/a/data" and b.deps == ["a"]
    assert b.config.value == 0  # a lone ${seed} keeps its int type
    assert b.config.model == "tiny"  # default ${model}


def test_overrides_address_stages_by_name(write_recipe):
    recipe = load_recipe(write_recipe(CHAIN), ["stages.a.value=7", "model=embedded", "seed=3"])
    assert recipe.stage("a").config.value == 7
    assert recipe.stage("a").config.model == "embedded"
    assert recipe.stage("b").config.value == 3
    with pytest.raises(ConfigError, match=r"no stage 'aa' \(did you mean 'a'\?\)"):
        load_recipe(write_recipe(CHAIN), ["stages.aa.value=7"])
    with pytest.raises(ConfigError, match="write it as key=value"):
        load_recipe(write_recipe(CHAIN), ["stages.a.value"])


def test_cycle_is_an_error(write_recipe):
    text = """
stages:
  - {name: a, type: echo, input: "${stages.b.dataset}"}
  - {name: b, type: echo, input: "${stages.a.dataset}"}
"""
    with pytest.raises(ConfigError, match="reference cycle: a -> b -> a"):
        load_recipe(write_recipe(text))


def test_all_problems_reported_with_file_line_stage_and_field(write_recipe):
    text = """name: bad
modle: tiny
stages:
  - name: a
    type: echo
    valeu: 3
    num_shards: 0
  - name: b
    type: ecko
  - name: c
    type: echo
    input: ${stages.a.datasett}
  - name: d
    type: echo
    input: ${stages.zz.dataset}
    model: /no/such/model
"""
    path = write_recipe(text)
    with pytest.raises(ConfigError) as e:
        load_recipe(path)
    problems = e.value.problems
    text = "\n".join(problems)
    assert f"{path}:2: unknown top-level field 'modle' (did you mean 'model'?)" in text
    assert f"{path}:6: stage 'a': valeu: unknown field (did you mean 'value'?)" in text
    assert (
        f"{path}:9: stages[1]: type: unknown stage type 'ecko' (did you mean 'echo'?); valid stage types are" in text
    )
    assert (
        "stage 'c': reference '${stages.a.datasett}': stage 'a' has no output 'datasett' (did you mean 'dataset'?)"
        in text
    )
    assert "stage 'd': reference '${stages.zz.dataset}' names unknown stage 'zz'" in text
    assert "model: model path '/no/such/model' does not exist; use 'embedded'" in text
    assert len(problems) == 6, text


def test_num_shards_check_and_missing_type(write_recipe):
    with pytest.raises(ConfigError) as e:
        load_recipe(write_recipe("stages:\n  - name: a\n    type: echo\n    num_shards: 0\n  - name: b\n"))
    assert any("stage 'a': num_shards: must be positive, got 0" in p for p in e.value.problems)
    assert any("stages[1]: type: missing; valid stage types are" in p for p in e.value.problems)


def test_yaml_syntax_error_names_line_and_column(write_recipe):
    bad_indent = "name: x\nstages:\n  - name: a\n    type: echo\n   value: 1\n"
    with pytest.raises(ConfigError, match=r"recipe.yaml:5:4: YAML syntax error: expected <block end>"):
        load_recipe(write_recipe(bad_indent))


def test_missing_file():
    with pytest.raises(ConfigError, match="recipe file 'nope.yaml' not found; the shipped recipes are in recipes/"):
        load_recipe("nope.yaml")


def test_stage_outputs_are_not_checked_as_existing_paths(write_recipe):
    text = """
stages:
  - {name: a, type: echo}
  - {name: b, type: sft, model: "${stages.a.model}", data: "parquet:${stages.a.dataset}"}
"""
    recipe = load_recipe(write_recipe(text), run_dir="/r")
    assert recipe.stage("b").config.data.source == "parquet:/r/recipe/a/data"


GRPO_TRL = """
stages:
  - name: rl
    type: grpo
    data: {source: reasoning_gym:chain_sum, size: 8}
    rewards: [math]
    trl_args: {TRL}
"""


def test_trl_args_are_checked_against_trl_and_passed_through(write_recipe, tmp_path):
    from posttrain.stages.base import StageContext

    bad = GRPO_TRL.replace("{TRL}", "{top_k: 5, num_iteratons: 2, learning_rate: 1.0, output_dir: x}")
    with pytest.raises(ConfigError) as e:
        load_recipe(write_recipe(bad))
    text = "\n".join(e.value.problems)
    assert "trl_args.num_iteratons: not a field of trl.GRPOConfig (did you mean 'num_iterations'?)" in text
    assert "trl_args.learning_rate: set it as the stage's own field `learning_rate`" in text
    assert "trl_args.output_dir: the stage sets it itself" in text
    assert "top_k" not in text
    spec = load_recipe(write_recipe(GRPO_TRL.replace("{TRL}", "{top_k: 5, num_iterations: 2}"))).stage("rl")
    stage = spec.stage_class(spec.config, StageContext("rl", "r", tmp_path))
    args = stage._trainer_args([1.0])
    assert args.top_k == 5 and args.num_iterations == 2 and args.max_steps == spec.config.max_steps


def test_settings_that_are_ignored_are_warned_about(write_recipe, capsys):
    from posttrain.cli import main

    text = GRPO_TRL.replace("    trl_args: {TRL}\n", "    vllm_gpu_memory_utilization: 0.5\n")
    text += "  - {name: sft, type: sft, data: 'reasoning_gym:chain_sum', max_steps: 7, num_epochs: 1}\n"
    path = write_recipe(text)
    recipe = load_recipe(path)
    assert recipe.warnings == [
        f"{path}:7: stage 'rl': vllm_gpu_memory_utilization: ignored without use_vllm: true",
        f"{path}:8: stage 'sft': max_steps: 7 is ignored because num_epochs (1.0) is set",
    ]
    assert main(["validate", path]) == 0
    assert "warning: " + recipe.warnings[0] in capsys.readouterr().err


def test_overrides_index_into_lists_and_leave_yaml_aliases_of_other_stages_alone():
    """`stages.NAME.rewards.0.model=...` sets one list entry; the recipe's chat evals share one `&judge` list."""
    path = "recipes/deepseek_v3.yaml"
    recipe = load_recipe(
        path, ["stages.eval_sft_chat.rewards.0.model=tiny", "stages.eval_sft_chat.rewards.0.mode=reference"]
    )
    judge = recipe.stage("eval_sft_chat").config.rewards[0]
    assert (judge.name, judge.model, judge.mode) == ("llm_judge", "tiny", "reference")
    for other in ("eval_base_chat", "eval_rl_chat"):  # the same YAML alias, not overridden
        assert (recipe.stage(other).config.rewards[0].model, recipe.stage(other).config.rewards[0].mode) == (
            "embedded",
            "rubric",
        )
    with pytest.raises(
        ConfigError, match=r"'rewards' is a list of 1; address an entry by its index, 0 to 0 \(got '3'\)"
    ):
        load_recipe(path, ["stages.eval_sft_chat.rewards.3.model=tiny"])
    with pytest.raises(ConfigError, match=r"got 'model'"):
        load_recipe(path, ["stages.eval_sft_chat.rewards.model=tiny"])
