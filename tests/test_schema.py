from dataclasses import dataclass, field
from typing import Literal

from data_gen.sources import SourceConfig
from posttrain.recipe.schema import parse, to_dict


@dataclass
class Inner:
    a: int = 1


@dataclass
class Cfg:
    name: str = field(metadata={"help": "the name"})
    lr: float = 1e-3
    steps: int = 10
    flag: bool = False
    mode: Literal["fast", "slow"] = "fast"
    inner: Inner = field(default_factory=Inner)
    tags: list[str] = field(default_factory=list)
    extra: dict[str, int] = field(default_factory=dict)
    maybe: int | None = None
    data: SourceConfig | None = None


def test_valid_config_builds_typed_tree():
    cfg, problems = parse(Cfg, {"name": "x", "lr": "1e-4", "inner": {"a": 3}, "tags": ["a"], "data": "humaneval"})
    assert problems == []
    assert cfg.lr == 1e-4 and cfg.inner.a == 3 and cfg.tags == ["a"]
    assert cfg.data.source == "humaneval" and cfg.data.on_error == "raise"
    assert to_dict(cfg)["inner"] == {"a": 3}


def test_every_problem_is_reported_at_once():
    data = {"stepz": 3, "lr": "fast", "flag": "yes", "mode": "slwo", "inner": {"b": 1}, "tags": [1], "maybe": "x"}
    _, problems = parse(Cfg, data, where=lambda path: "f.yaml:1: ")
    text = "\n".join(problems)
    assert len(problems) == 8, text
    assert "stepz: unknown field (did you mean 'steps'?)" in text
    assert "lr: expected a number, got 'fast'" in text
    assert "flag: expected true or false, got 'yes'" in text
    assert "mode: 'slwo' is not allowed (did you mean 'slow'?); use 'fast' or 'slow'" in text
    assert "inner.b: unknown field" in text
    assert "tags.0: expected a string, got 1" in text
    assert "maybe: expected an integer, got 'x'" in text
    assert "name: missing required field (the name)" in text
    assert all(p.startswith("f.yaml:1: ") for p in problems)


def test_bool_is_not_an_int_and_check_runs():
    _, problems = parse(Cfg, {"name": "x", "steps": True})
    assert problems == ["steps: expected an integer, got True"]
    _, problems = parse(SourceConfig, {"source": "reasoning_gym:basic_arithmetc", "size": 0})
    assert any("did you mean 'basic_arithmetic'" in p for p in problems)
    assert any("size: must be positive" in p for p in problems)
