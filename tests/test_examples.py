"""Every example command we show a user (the README, module docstrings, recipe headers) names a real recipe, real
stages and real fields: each `posttrain run/plan/validate RECIPE key=value ... [--from STAGE]` goes through the
recipe loader, as `posttrain validate` would. A hub model id or placeholder path in an example is swapped for the
tiny model (no network here); everything else is checked as written."""

from __future__ import annotations

import ast
import glob
import re
import shlex
from pathlib import Path

import pytest

from posttrain.recipe.loader import load_recipe

ROOT = Path(__file__).resolve().parents[1]
COMMAND = re.compile(r"^\s*(?:[#$>]\s*)*(posttrain (?:run|plan|validate) .*)$")
FLAGS_WITH_VALUE = ("--from", "--num-processes", "--accelerate-config", "--run-dir")


def _texts() -> list[tuple[str, str]]:
    out = [("README.md", (ROOT / "README.md").read_text(encoding="utf-8"))]
    for path in sorted(ROOT.glob("recipes/**/*.yaml")):
        out.append((str(path.relative_to(ROOT)), path.read_text(encoding="utf-8")))
    for package in ("posttrain", "data_gen", "rewards"):
        for path in sorted((ROOT / package).rglob("*.py")):
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
            if doc:
                out.append((str(path.relative_to(ROOT)), doc))
    return out


def example_commands() -> list[tuple[str, str]]:
    """(where, command) for every example command, continuation lines joined."""
    found = []
    for where, text in _texts():
        lines = text.splitlines()
        for i, line in enumerate(lines):
            match = COMMAND.match(line)
            if not match:
                continue
            command = match.group(1)
            while command.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                command = command.rstrip()[:-1] + " " + lines[i].lstrip(" #")
            command = command.split("  #")[0].split("`")[0].strip()  # a trailing comment or inline-code end
            found.append((where, command))
    return found


def _placeholder(value: str) -> bool:
    return "/path/to" in value or bool(re.fullmatch(r"[\w.-]+/[\w.-]+", value)) or value.isupper()


@pytest.mark.parametrize(("where", "command"), example_commands())
def test_example_command_validates(where, command):
    words = shlex.split(command)[2:]
    recipes, overrides, from_stage, skip = [], [], None, None
    for word in words:
        if skip:
            from_stage = word if skip == "--from" else from_stage
            skip = None
        elif word in FLAGS_WITH_VALUE:
            skip = word
        elif word.startswith("-"):
            continue
        elif "=" in word:
            key, _, value = word.partition("=")
            overrides.append(f"{key}=tiny" if key.endswith("model") and _placeholder(value) else word)
        else:
            recipes.append(word)
    paths = [p for r in recipes for p in sorted(glob.glob(str(ROOT / r)))] if recipes else []
    if any(r.isupper() for r in recipes):  # `posttrain run RECIPE ...`: a placeholder, not an example
        pytest.skip("placeholder recipe")
    assert paths, f"{where}: `{command}` names no existing recipe"
    for path in paths:
        recipe = load_recipe(path, overrides)
        if from_stage is not None:
            assert from_stage in recipe.stage_names, f"{where}: `{command}`: no stage '{from_stage}'"


def test_examples_were_found():
    assert len(example_commands()) >= 15
