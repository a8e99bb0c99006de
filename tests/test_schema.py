from dataclasses import dataclass, field
from typing import Literal

from data_gen.sources import SourceConfig
from posttrain.config import parse, to_dict


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


def test_nan_and_inf_are_refused_in_float_fields():
    for value in (float("nan"), float("inf"), "-inf", "nan"):
        _, problems = parse(Cfg, {"name": "x", "lr": value})
        assert problems and "lr: expected a finite number" in problems[0], (value, problems)


@dataclass
class Shape:
    kind: str

    @classmethod
    def __select__(cls, value):
        return {"circle": Circle, "square": Square}.get(value.get("kind")) or [f"kind: unknown shape {value!r}"]


@dataclass(kw_only=True)
class Circle(Shape):
    radius: float


@dataclass(kw_only=True)
class Square(Shape):
    __field_kind__ = "setting of a square"
    side: int = 1

    def check(self):
        return [f"side: must be positive, got {self.side}"] if self.side <= 0 else []


@dataclass
class Drawing:
    shapes: list[Shape]


def test_select_picks_the_class_that_parses_each_value():
    cfg, problems = parse(Drawing, {"shapes": [{"kind": "circle", "radius": 2}, {"kind": "square"}]})
    assert problems == [] and isinstance(cfg.shapes[0], Circle) and cfg.shapes[0].radius == 2.0
    _, problems = parse(
        Drawing,
        {"shapes": [{"kind": "circle"}, {"kind": "square", "sied": 2}, {"kind": "square", "side": 0}, {"kind": "x"}]},
    )
    assert problems == [
        "shapes.0.radius: missing required field",
        "shapes.1.sied: unknown setting of a square (did you mean 'side'?); valid fields are 'kind' or 'side'",
        "shapes.2.side: must be positive, got 0",
        "shapes.3.kind: unknown shape {'kind': 'x'}",
    ]


def test_check_gets_the_context_when_it_asks_for_it():
    from posttrain.config import CheckContext

    pending = CheckContext(("/runs/r/distill/dataset",))
    _, problems = parse(SourceConfig, "/runs/r/distill/dataset", ctx=pending)
    assert problems == []
    _, problems = parse(SourceConfig, "/runs/r/distill/dataset")
    assert problems and "no file or folder matches" in problems[0]
