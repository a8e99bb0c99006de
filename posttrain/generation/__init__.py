"""Generation: one `Generator` protocol with vLLM and transformers backends (see `posttrain.generation.base`)."""

from posttrain.generation.base import (
    GENERATORS,
    Generator,
    GeneratorConfig,
    Sample,
    SamplingConfig,
    choose_backend,
    render_prompts,
)
from posttrain.generation.factory import make_generator

__all__ = [
    "GENERATORS",
    "Generator",
    "GeneratorConfig",
    "Sample",
    "SamplingConfig",
    "choose_backend",
    "make_generator",
    "render_prompts",
]
