"""A generator that runs in a child process, so its memory goes back to the machine when it closes.

An in-process vLLM engine's memory (a KV cache of about 7 GiB at memory share 0.3 on CPU, its weights, its
allocator's arenas) stays with the process after the engine is shut down, so a second engine later in the same
`posttrain run` can fail to allocate. `IsolatedGenerator` builds the real backend in a fresh (spawned) process and
talks to it over a pipe: `generate` and `submit` keep their meaning (requests submitted ahead are queued in the
child's engine), and `close` ends the process, which returns everything it held. `make_generator` isolates vLLM
by default (`GeneratorConfig.isolate`); the transformers backend stays in-process unless asked.
"""

from __future__ import annotations

import itertools
import traceback
from collections.abc import Sequence
from typing import Any

from posttrain.generation.base import GENERATORS, GeneratorConfig, Messages, Pending, Sample


def _serve(conn: Any, backend: str, model: str, config: GeneratorConfig, seed: int) -> None:
    """The child's loop: build the backend, then answer ('generate' | 'submit' | 'result' | 'close') messages."""
    try:
        generator = GENERATORS.get(backend)(model, config, seed)
    except BaseException as e:  # the parent raises it with the child's traceback
        conn.send(("error", type(e).__name__, str(e), traceback.format_exc()))
        return
    conn.send(("ready", generator.name))
    pending: dict[int, Any] = {}
    submit = getattr(generator, "submit", None)
    while True:
        message = conn.recv()
        kind = message[0]
        try:
            if kind == "close":
                break
            if kind == "generate":
                conn.send(("ok", generator.generate(message[1], **message[2])))
            elif kind == "submit":
                _, key, prompts, sampling = message
                pending[key] = (
                    submit(prompts, **sampling)
                    if submit
                    else Pending(lambda p=prompts, s=sampling: generator.generate(p, **s))
                )
            elif kind == "result":
                conn.send(("ok", pending.pop(message[1]).result()))
        except BaseException as e:
            conn.send(("error", type(e).__name__, str(e), traceback.format_exc()))
    generator.close()
    conn.send(("closed",))


class IsolatedGenerator:
    """The `Generator` protocol over a backend that lives in a child process (see the module docstring)."""

    def __init__(self, backend: str, model: str, config: GeneratorConfig | None = None, seed: int = 0):
        import multiprocessing

        from posttrain.model.loading import load_tokenizer

        context = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing of the parent's heap
        self.conn, child = context.Pipe()
        # Not a daemon: vLLM starts processes of its own, which a daemonic process may not.
        self.process = context.Process(target=_serve, args=(child, backend, model, config, seed), name="generator")
        self.process.start()
        child.close()
        self.name = self._reply()
        self.tokenizer = load_tokenizer(model)
        self._keys = itertools.count()

    def _reply(self) -> Any:
        try:
            message = self.conn.recv()
        except EOFError:
            raise RuntimeError(f"the generator process died (exit code {self.process.exitcode})") from None
        if message[0] == "error":
            _, kind, text, trace = message
            from posttrain.errors import UserError

            if kind in ("ModelError", "ConfigError", "DataError", "UserError"):
                raise UserError(text)
            raise RuntimeError(f"in the generator process: {kind}: {text}\n{trace}")
        return message[1] if len(message) > 1 else None

    def generate(self, prompts: Sequence[Messages], **sampling: Any) -> list[list[Sample]]:
        self.conn.send(("generate", list(prompts), sampling))
        return self._reply()

    def submit(self, prompts: Sequence[Messages], **sampling: Any) -> Pending:
        key = next(self._keys)
        self.conn.send(("submit", key, list(prompts), sampling))

        def wait() -> list[list[Sample]]:
            self.conn.send(("result", key))
            return self._reply()

        return Pending(wait)

    def close(self) -> None:
        """End the child process; its engine's memory goes back to the machine."""
        if self.process.is_alive():
            try:
                self.conn.send(("close",))
                self.conn.recv()
            except (EOFError, OSError, BrokenPipeError):
                pass
            self.process.join(timeout=60)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()
