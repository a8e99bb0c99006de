"""A pool of Ray actors, each owning the state its `setup` built once (a generator), running shards in order.

    pool = RayPool(ExecutorConfig(kind="ray", num_workers=2), setup, (model, generator_config, seed))
    for key, result in pool.map_in_order(fn, [0, 1, 2], payload=make_task):
        commit(key, result)                       # in the order of the keys, whoever finished first
    pool.close()

`fn(state, task)` runs on an actor; `setup` and `fn` must be importable module-level functions (Ray pickles them by
reference). Each actor has at most two shards queued, so it never waits for the driver between shards; results that
arrive ahead of an earlier shard are held until that one is in. An actor that dies (its process killed, out of
memory, its node lost) fails only the shards it held: each is redone on a fresh actor, at most `max_retries` times,
and `retries` counts them. An exception raised by `fn` itself is not retried (it would fail again): it is raised
here with the worker's traceback. Ray is imported only when a pool starts.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import math
import os
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from posttrain.generation.executor import RAY_INSTALL, ExecutorConfig, worker_options

log = logging.getLogger(__name__)

# Test hook: a path; the first actor to start a shard while the file does not exist creates it and exits at once,
# as a killed worker process would (`os._exit`, no cleanup). Read on the driver, handed to each actor.
DIE_ONCE_ENV = "POSTTRAIN_TEST_RAY_DIE_ONCE"
QUEUED_PER_WORKER = 2


class _Worker:
    """The actor: builds its state once, then runs tasks on it. Wrapped by `ray.remote` when a pool starts."""

    def __init__(self, setup: Callable[..., Any], args: Sequence[Any], die_once: str | None):
        self.die_once = die_once
        self.error: tuple[str, str, str] | None = None
        try:
            self.state = setup(*args)
        except BaseException as e:  # reported by ready(), so the driver raises it as a user error where it is one
            self.state = None
            self.error = (type(e).__name__, str(e), traceback.format_exc())

    def ready(self) -> tuple[str, str, str] | None:
        return self.error

    def run(self, fn: Callable[[Any, Any], Any], task: Any) -> Any:
        if self.die_once and not os.path.exists(self.die_once):
            Path(self.die_once).write_text(str(os.getpid()))
            os._exit(1)
        return fn(self.state, task)

    def apply(self, fn: Callable[[Any], Any]) -> Any:
        return fn(self.state)

    def close(self) -> None:
        close = getattr(self.state, "close", None) or getattr(getattr(self.state, "generator", None), "close", None)
        if close is not None:
            close()


class RayPool:
    """`num_workers` actors on a local Ray cluster (address null) or a running one; see the module docstring."""

    def __init__(self, config: ExecutorConfig, setup: Callable[..., Any], args: Sequence[Any], where: str = ""):
        try:
            import ray
        except ImportError:
            from posttrain.errors import UserError

            raise UserError(f"{where}executor.kind: ray is not installed; run `{RAY_INSTALL}`") from None
        self.ray, self.config, self.where = ray, config, where
        self.setup, self.args = setup, tuple(args)
        self.retries = 0
        self.options = worker_options(config)
        self._own_cluster = False
        if not ray.is_initialized():
            if config.address is None:
                need = math.ceil(config.num_workers * self.options["num_cpus"])
                ray.init(
                    address="local",  # a new cluster of our own, never one found on the machine
                    num_cpus=max(os.cpu_count() or 1, need),
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                )
                self._own_cluster = True
            else:
                ray.init(address=config.address, log_to_driver=False, configure_logging=False)
        self._check_resources()
        self._remote = ray.remote(max_restarts=0, max_task_retries=0, **self.options)(_Worker)
        self.die_once = os.environ.get(DIE_ONCE_ENV)
        self.actors = [self._start() for _ in range(config.num_workers)]
        self.generation = [0] * config.num_workers  # bumped when a slot's actor is replaced
        self._wait_ready(self.actors)

    def _check_resources(self) -> None:
        from posttrain.errors import UserError

        have = self.ray.cluster_resources()
        want = {"CPU": self.options["num_cpus"], "GPU": self.options["num_gpus"], **self.options.get("resources", {})}
        for name, each in want.items():
            total = each * self.config.num_workers
            if total > have.get(name, 0) + 1e-9:
                raise UserError(
                    f"{self.where}executor.resources_per_worker: {self.config.num_workers} workers x {each:g} {name} "
                    f"= {total:g}, but the Ray cluster has {have.get(name, 0):g}; lower num_workers or the resources "
                    "per worker, or add nodes"
                )

    def _start(self) -> Any:
        return self._remote.remote(self.setup, self.args, self.die_once)

    def _wait_ready(self, actors: Sequence[Any]) -> None:
        for error in self.ray.get([a.ready.remote() for a in actors]):
            if error is None:
                continue
            kind, text, trace = error
            from posttrain.errors import UserError

            if kind in ("ModelError", "ConfigError", "DataError", "UserError"):
                raise UserError(text)
            raise RuntimeError(f"a Ray worker failed to start: {kind}: {text}\n{trace}")

    def _replace(self, slot: int) -> None:
        self.ray.kill(self.actors[slot], no_restart=True)
        self.actors[slot] = self._start()
        self.generation[slot] += 1
        self._wait_ready([self.actors[slot]])

    def map_in_order(
        self, fn: Callable[[Any, Any], Any], keys: Sequence[Any], payload: Callable[[Any], Any] = lambda key: key
    ) -> Iterator[tuple]:
        """Run `fn(state, payload(key))` for every key on the actors; yield (key, result) in the order of `keys`.
        `payload` is called when a key is handed out (again if it is redone), so only shards in flight are held."""
        from ray.exceptions import RayActorError

        ray = self.ray
        num = len(self.actors)
        window = QUEUED_PER_WORKER * num * 2  # results held ahead of the next one to commit, at most
        todo = list(range(len(keys)))  # a heap of task indices still to hand out
        heapq.heapify(todo)
        in_flight: dict[Any, tuple[int, int, int]] = {}  # ref -> (slot, generation, task index)
        load = [0] * num
        attempts = [0] * len(keys)
        finished: dict[int, Any] = {}
        next_out = 0

        def hand_out() -> None:
            while todo and todo[0] < next_out + window:
                slot = min(range(num), key=lambda s: load[s])
                if load[slot] >= QUEUED_PER_WORKER:
                    return
                i = heapq.heappop(todo)
                ref = self.actors[slot].run.remote(fn, payload(keys[i]))
                in_flight[ref] = (slot, self.generation[slot], i)
                load[slot] += 1

        hand_out()
        while next_out < len(keys):
            while next_out in finished:
                yield keys[next_out], finished.pop(next_out)
                next_out += 1
                hand_out()
            if next_out >= len(keys):
                break
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            ref = ready[0]
            slot, generation, i = in_flight.pop(ref)
            if generation == self.generation[slot]:  # a replaced actor's shards no longer count on its slot
                load[slot] -= 1
            try:
                finished[i] = ray.get(ref)
            except RayActorError as e:
                attempts[i] += 1
                self.retries += 1
                if attempts[i] > self.config.max_retries:
                    raise RuntimeError(
                        f"{self.where}shard {keys[i]}: its Ray worker died {attempts[i]} times "
                        f"(executor.max_retries: {self.config.max_retries}); last: {str(e).splitlines()[0]} "
                        "(raise max_retries, or look for the cause in the Ray logs: out of memory, a crash)"
                    ) from None
                log.warning("a Ray worker died on shard %s; redoing it on a new worker", keys[i])
                if generation == self.generation[slot]:  # the first of its shards to report the death
                    self._replace(slot)
                    load[slot] = 0
                heapq.heappush(todo, i)
            hand_out()

    def apply(self, fn: Callable[[Any], Any]) -> Any:
        """`fn(state)` on the first actor (e.g. the name of its generator's backend)."""
        return self.ray.get(self.actors[0].apply.remote(fn))

    def close(self) -> None:
        """End the actors (their engines' memory goes back) and, when this pool started it, the local cluster."""
        ray = self.ray
        for actor in self.actors:
            with contextlib.suppress(Exception):  # already dead, or stuck: it is killed below either way
                ray.get(actor.close.remote(), timeout=60)
            ray.kill(actor, no_restart=True)
        self.actors = []
        if self._own_cluster:
            ray.shutdown()
