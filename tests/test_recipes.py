"""Every shipped recipe validates (no weights loaded)."""

from pathlib import Path

import pytest

from posttrain.recipe.loader import load_recipe

RECIPES = sorted(str(p) for p in Path(__file__).parent.parent.glob("recipes/*.yaml"))


@pytest.mark.parametrize("path", RECIPES)
def test_shipped_recipe_validates(path):
    recipe = load_recipe(path)
    assert recipe.stages


def test_there_are_recipes():
    assert "sft.yaml" in {Path(p).name for p in RECIPES}
