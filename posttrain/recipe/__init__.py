"""Recipes: the typed schema, the YAML loader with overrides and references, and the runner."""
