"""The pieces `recipes/deepseek_v3.yaml` chains: an SFT stage on both sample types from a list of sources, GRPO over
several domain-tagged sources with rewards routed per domain (checked per domain at validation), pooled preference
pairs, identical samples of one prompt counted once, the logic domain's worked answers, a held-out slice of one
source (`skip`), and the recipe itself: it validates, its evals fill every row of the chain table, and changing one
expert re-runs that expert and what depends on it, and nothing else."""

from __future__ import annotations

import json

import datasets
import pytest

from data_gen.pairs import load_pairs
from data_gen.rejection import FilterConfig, judge_samples
from data_gen.samples import aiw_reasoning, expert_sample
from data_gen.sources import SourceConfig, data_columns, load_data, load_source
from posttrain.errors import ConfigError, DataError
from posttrain.generation import Sample
from posttrain.recipe.loader import load_recipe
from posttrain.stages.sft import build_samples

AIW = {"task_types": ["siblings", "friends"], "task_type_weights": [0.5, 0.5]}


def test_sft_rows_are_taken_one_by_one_conversations_and_task_rows_together(tmp_path):
    r1 = tmp_path / "r1.jsonl"
    conversation = [
        {"role": "system", "content": "Reflect."},
        {"role": "user", "content": "1 + 2 ="},
        {"role": "assistant", "content": "<think>1 + 2 = 3</think> \\boxed{3}"},
    ]
    r1.write_text(json.dumps({"prompt": conversation[:2], "messages": conversation, "answer": "3"}) + "\n")
    task = SourceConfig(source="reasoning_gym:chain_sum", size=3, seed=1)
    rows = load_data([SourceConfig(source=f"jsonl:{r1}"), task])
    samples = build_samples(rows, "auto", None, "stage 'x': data")
    assert len(samples) == 4
    assert samples[0]["messages"] == conversation  # the R1 row as it was
    for row, built in zip(load_source(task), samples["messages"][1:]):  # the task rows: <problem, original response>
        assert built == expert_sample(row)["messages"] and built[-1]["content"].endswith(
            f"\\boxed{{{row['answer']}}}."
        )


def test_logic_rows_get_a_worked_answer_that_reaches_the_gold():
    rows = load_source(SourceConfig(source="reasoning_gym:aiw", size=40, seed=3, args=AIW)).to_list()
    assert {r["answer"] for r in rows} > {"2"}
    for row in rows:
        text = aiw_reasoning(row, row["answer"])
        assert text is not None and text.endswith(f"= {row['answer']}.")
    siblings = {"task": "aiw", "prompt": [{"role": "user", "content": (
        "Ann has 2 brothers and she also has 3 sisters. How many sisters does Ann's brother have?")}]}  # fmt: skip
    assert "3 + 1 = 4" in aiw_reasoning(siblings, "4")
    assert aiw_reasoning(siblings, "3") is None  # a gold it cannot derive: no made-up reasoning
    assert aiw_reasoning({**siblings, "task": "chain_sum"}, "4") is None


def test_enum_task_args_are_read_from_strings_and_a_wrong_one_is_named():
    rows = load_source(SourceConfig(source="reasoning_gym:aiw", size=30, seed=1, args=AIW)).to_list()
    assert all("colleague" not in r["prompt"][0]["content"] for r in rows)
    with pytest.raises(DataError, match=r"args.task_types: unknown value 'sibling' \(did you mean 'siblings'\?\)"):
        load_source(SourceConfig(source="reasoning_gym:aiw", size=3, args={"task_types": ["sibling"]}))


def test_skip_takes_a_disjoint_slice_of_one_shuffled_source():
    train = load_source(SourceConfig(source="builtin:chat_prompts", shuffle=True, seed=0, size=40))
    held = load_source(SourceConfig(source="builtin:chat_prompts", shuffle=True, seed=0, skip=40, size=20))
    text = lambda ds: {r[0]["content"] for r in ds["prompt"]}  # noqa: E731
    assert len(held) == 20 and not text(train) & text(held)
    with pytest.raises(DataError, match="skip: 9999 drops all 295 rows"):
        load_source(SourceConfig(source="builtin:chat_prompts", skip=9999))
    assert SourceConfig(source="humaneval", skip=-1).check() == [
        "skip: must be >= 0 (rows dropped before `size` is taken), got -1"
    ]


def test_identical_survivors_of_one_prompt_count_once():
    samples = [Sample(t, 5, "stop") for t in ("It is 4.", "It  is 4.\n", "It is 4!", "It is 5.")]
    verdicts = judge_samples(samples, [True, True, True, False], [1.0] * 4, FilterConfig(language=None))
    assert verdicts == ["kept", "duplicate", "kept", "incorrect"]
    off = FilterConfig(language=None, drop_duplicates=False)
    assert judge_samples(samples, [True, True, True, False], [1.0] * 4, off) == ["kept", "kept", "kept", "incorrect"]


def test_pairs_from_several_sources_are_pooled(tmp_path):
    def pair(i: int, extra: dict) -> dict:
        return {"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}", **extra}

    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps(pair(i, {"answer": str(i)})) + "\n" for i in range(3)))
    b.write_text("".join(json.dumps(pair(i, {"domain": "code"})) + "\n" for i in range(3, 5)))
    pooled = load_pairs([SourceConfig(source=f"jsonl:{a}"), SourceConfig(source=f"jsonl:{b}")], "stage 'rm': data")
    assert len(pooled) == 5 and pooled["answer"] == ["0", "1", "2", None, None]
    assert pooled["domain"] == [None, None, None, "code", "code"]
    b.write_text(json.dumps({"prompt": "q", "chosen": "x"}) + "\n")
    with pytest.raises(DataError, match=r"stage 'rm': data\[1\]"):
        load_pairs([SourceConfig(source=f"jsonl:{a}"), SourceConfig(source=f"jsonl:{b}")], "stage 'rm': data")


def test_routed_rewards_are_checked_against_the_columns_of_their_domains(write_recipe):
    sources = [
        SourceConfig(source="reasoning_gym:chain_sum", domain="math"),
        SourceConfig(source="builtin:code_tasks", domain="code"),
    ]
    assert "answer" not in data_columns(sources) and "tests" in data_columns(sources, ["code"])
    data = (
        "    data:\n"
        "      - {source: reasoning_gym:chain_sum, size: 8, domain: math}\n"
        "      - {source: builtin:code_tasks, size: 8, domain: code}\n"
    )
    ok = write_recipe(
        "stages:\n  - name: rl\n    type: grpo\n    model: tiny\n" + data + "    rewards:\n"
        "      - {name: math, domains: [math]}\n      - {name: code, domains: [code]}\n"
    )
    load_recipe(ok)
    unrouted = write_recipe(
        "stages:\n  - name: rl\n    type: grpo\n    model: tiny\n" + data + "    rewards: [{name: math}]\n"
    )
    with pytest.raises(ConfigError, match=r"rewards\[0\] \(math\): needs the dataset column 'answer'"):
        load_recipe(unrouted)


def test_grpo_reads_every_source_with_its_domain(tmp_path):
    from posttrain.stages.base import StageContext
    from posttrain.stages.grpo import GrpoConfig, GrpoStage

    cfg = GrpoConfig(
        data=[
            SourceConfig(source="reasoning_gym:chain_sum", size=6, seed=1, domain="math"),
            SourceConfig(source="reasoning_gym:aiw", size=4, seed=1, args=AIW, domain="logic"),
        ],
        rewards=[],
        eval_size=2,
    )
    stage = GrpoStage(cfg, StageContext(name="rl", recipe="r", stage_dir=tmp_path, show_progress=False))
    train, evals = stage._datasets()
    assert len(train) + len(evals) == 10
    assert sorted([*train["domain"], *evals["domain"]]) == ["logic"] * 4 + ["math"] * 6


RECIPE = "recipes/deepseek_v3.yaml"


def test_the_recipe_chains_every_step_and_fills_every_row_of_the_chain_table():
    recipe = load_recipe(RECIPE)
    stages = {s.name: s for s in recipe.stages}
    types = [s.type for s in recipe.stages]
    assert types.count("grpo") == 4 and types.count("reward_model") == 2 and types.count("mix") == 1
    for domain in ("math", "logic", "code"):
        expert = stages[f"{domain}_expert"].config
        assert isinstance(expert.data, list) and len(expert.data) == 2  # R1 rows + <problem, original response>
        assert stages[f"{domain}_rl"].config.system_prompt and stages[f"{domain}_rl"].config.temperature >= 1.0
        assert stages[f"distill_{domain}"].config.sample_types == ["r1", "original"]
        assert stages[f"distill_{domain}"].config.pairs.per_prompt > 0
    points = {}
    for s in recipe.stages:
        if s.type == "eval":
            points.setdefault(s.config.point, set()).add(s.config.domain or s.config.data.domain)
    assert points == {
        "base": {"math", "logic", "code", "chat"},
        "math_expert": {"math"},
        "logic_expert": {"logic"},
        "code_expert": {"code"},
        "sft": {"math", "logic", "code", "chat"},
        "rl": {"math", "logic", "code", "chat"},
    }
    # every eval set the recipe reports on is a decontamination set of the mix
    evals = {
        json.dumps(s.config.data.__dict__, sort_keys=True, default=str) for s in recipe.stages if s.type == "eval"
    }
    against = {json.dumps(a.__dict__, sort_keys=True, default=str) for a in stages["mix"].config.decontaminate.against}
    assert evals <= against and any(a.source == "humaneval" for a in stages["mix"].config.decontaminate.against)
    rewards = {r.name: r.domains for r in stages["rl"].config.rewards}
    assert rewards == {"math": ["math", "logic"], "code": ["code"], "reward_model": ["chat"]}


def test_changing_one_expert_re_runs_it_and_its_downstream_only():
    # A stage's cache key is its config plus its upstream stages' output ids (Runner._key): the stages whose key
    # changes are those whose config changed and every stage that reads one of them, transitively.
    before = {s.name: s for s in load_recipe(RECIPE).stages}
    after = {s.name: s for s in load_recipe(RECIPE, overrides=["stages.logic_expert.max_steps=17"]).stages}
    changed = {name for name in before if before[name].config_dict() != after[name].config_dict()}
    assert changed == {"logic_expert"}
    rerun = set(changed)
    for spec in after.values():  # recipe order is a dependency order
        if rerun & set(spec.deps):
            rerun.add(spec.name)
    assert {"logic_rl", "eval_logic_expert", "distill_logic", "verifier_rm", "chat", "mix", "sft", "rm", "rl"} <= rerun
    assert {n for n in rerun if n.startswith("eval_")} == {"eval_logic_expert"} | {
        n for n in after if n.startswith(("eval_sft", "eval_rl"))
    }
    untouched = set(after) - rerun
    assert untouched == {n for n in after if n.startswith(("eval_base", "r1_", "math_", "code_", "eval_math", "eval_code"))} | {
        "r1_logic", "distill_math", "distill_code"
    }  # fmt: skip


def test_the_data_helpers_accept_one_source_too():
    one = SourceConfig(source="reasoning_gym:chain_sum", size=2, seed=1)
    stats: dict = {}
    assert len(load_data(one, "data", stats)) == 2 and stats["num_rows"] == 2
    assert isinstance(load_data([one, one]), datasets.Dataset)
