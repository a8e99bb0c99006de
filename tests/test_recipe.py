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
