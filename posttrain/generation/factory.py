"""`make_generator`: the configured backend for a model, in this process or in a child process of its own.

from posttrain.generation import GeneratorConfig, make_generator
gen = make_generator("embedded", GeneratorConfig(backend="auto"))
"""

from __future__ import annotations

from posttrain.generation.base import GENERATORS, Generator, GeneratorConfig, choose_backend
from posttrain.generation.isolated import IsolatedGenerator


def make_generator(model: str, config: GeneratorConfig | None = None, seed: int = 0) -> Generator:
    """Build a generator for `model` ('embedded', 'tiny', a folder or a hub id) with the configured backend.
    `seed` seeds the engine of backends that cannot seed each call (vLLM on CPU). vLLM runs in a child process
    unless `config.isolate` is false, so that its memory goes back when the generator closes."""
    from posttrain.model.loading import resolve_model

    config = config or GeneratorConfig()
    backend = choose_backend(resolve_model(model), config.backend)
    isolate = config.isolate if config.isolate is not None else backend == "vllm"
    if isolate:
        return IsolatedGenerator(backend, model, config, seed)
    return GENERATORS.get(backend)(model, config, seed)
