"""`posttrain report RUN`: a static web page (`report/index.html`) and a terminal summary (`report/summary.md`).

The page opens from disk with no server: the stage graph with status and timing, a before -> after table of every
eval, per-stage plots (per-step metrics, rejections per filter, the mix's composition) and a sample browser (kept
and rejected rejection-sampling samples with their rewards and the filter that dropped them, preference pairs,
eval samples, GRPO completions per step). Everything it shows is read from the run folder through `posttrain.runs`;
the page's own code is in `posttrain.report_html`.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Any

from posttrain.files import read_jsonl
from posttrain.runs import RunInfo, StageInfo, chain_table, fmt, read_run

PLOT_KEYS = ("loss", "eval_loss", "learning_rate", "grad_norm", "reward", "reward_std", "entropy", "kl")
SAMPLES_PER_KIND = 150  # per stage and kind: enough to browse, small enough to keep the page light


def plot_metrics(rows: list[dict], out: Path, title: str) -> bool:
    """Plot every numeric series (preferring PLOT_KEYS and reward columns) against step; False if nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({k for r in rows for k, v in r.items() if isinstance(v, (int, float)) and k not in ("step", "time")})
    keys = [k for k in keys if k in PLOT_KEYS or k.startswith(("rewards/", "eval_", "accept"))] or keys[:6]
    if not keys:
        return False
    fig, axes = plt.subplots(len(keys), 1, figsize=(7, 2.2 * len(keys)), squeeze=False)
    for ax, key in zip(axes[:, 0], keys):
        points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="." if len(points) < 50 else None)
        ax.set_ylabel(key, fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return True


def plot_filters(metrics: dict[str, Any], out: Path, title: str) -> bool:
    """Bar chart of the samples each rejection-sampling filter dropped (and how many were kept)."""
    counts = {k.split("/")[1]: v for k, v in metrics.items() if k.startswith("filter/") and k.endswith("/rejected")}
    counts = {k: v for k, v in counts.items() if v}
    if not counts and not metrics.get("kept"):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, values = ["kept", *counts], [metrics.get("kept", 0), *counts.values()]
    fig, ax = plt.subplots(figsize=(7, 2.6))
    ax.bar(labels, values, color=["#2e7d32"] + ["#c62828"] * len(counts))
    ax.set_ylabel("samples")
    ax.set_title(f"{title}: acceptance {fmt(metrics.get('acceptance'))}")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return True


def _parquet_rows(folder: Path, limit: int) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = []
    for file in sorted(folder.glob("*.parquet")) if folder.is_dir() else []:
        try:
            rows += pq.read_table(file).slice(0, limit - len(rows)).to_pylist()
        except (OSError, ValueError):
            continue  # an unreadable shard is the stage's problem, not the report's
        if len(rows) >= limit:
            break
    return rows


def _last_turn(messages: Any) -> str:
    return str(messages[-1].get("content", "")) if isinstance(messages, list) and messages else str(messages or "")


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, list):
        return "\n".join(str(m.get("content", "")) for m in prompt if m.get("role") != "assistant")
    return str(prompt or "")


def stage_samples(stage: StageInfo) -> list[dict[str, Any]]:
    """The samples a stage wrote, as flat records for the browser: stage, kind, step, prompt, text, verdict, rewards."""
    out: list[dict[str, Any]] = []
    folder, n = stage.folder, SAMPLES_PER_KIND

    def add(kind: str, text: Any, **extra: Any) -> None:
        out.append({"stage": stage.name, "kind": kind, "text": str(text or ""), **extra})

    for row in _parquet_rows(folder / "dataset", n) if stage.type == "rejection_sampling" else []:
        prompt = _prompt_text([m for m in row.get("messages") or [] if m.get("role") != "assistant"])
        add("kept", _last_turn(row.get("messages")), prompt=prompt, verdict=row.get("sample_type"),
            reward=row.get("reward"), rewards=row.get("rewards"), answer=row.get("answer"))  # fmt: skip
    for row in _parquet_rows(folder / "rejected", n):
        add("rejected", row.get("completion"), verdict=row.get("filter"), reward=row.get("reward"),
            rewards=row.get("rewards"), answer=row.get("answer"), prompt=row.get("source_id"))  # fmt: skip
    for row in _parquet_rows(folder / "pairs", n):
        add("pair", f"CHOSEN:\n{_last_turn(row.get('chosen'))}\n\nREJECTED:\n{_last_turn(row.get('rejected'))}",
            prompt=_prompt_text(row.get("prompt")), verdict=row.get("reason"))  # fmt: skip
    for row in read_jsonl(folder / "samples.jsonl")[:n]:
        add("eval sample", row.get("completion"), prompt=row.get("source_id"),
            verdict="passed" if row.get("passed") else "failed", rewards=row.get("rewards"))  # fmt: skip
    for row in read_jsonl(folder / "completions.jsonl")[-n:]:
        add("completion", row.get("completion"), step=row.get("step"), prompt=row.get("prompt"),
            rewards=row.get("rewards"), answer=row.get("answer"))  # fmt: skip
    for record in out:
        if isinstance(record.get("rewards"), str):
            with contextlib.suppress(ValueError):
                record["rewards"] = json.loads(record["rewards"])
    return out


def _plots(run: RunInfo, out: Path) -> dict[str, list[str]]:
    """Write every stage's figures into `out`; stage name -> file names relative to `out`."""
    plots: dict[str, list[str]] = {}
    for stage in run.stages:
        names = []
        rows = read_jsonl(stage.folder / "metrics.jsonl")
        if len(rows) > 1 and plot_metrics(rows, out / f"{stage.name}.png", stage.name):  # one point is no curve
            names.append(f"{stage.name}.png")
        if stage.type == "rejection_sampling" and plot_filters(
            stage.metrics, out / f"{stage.name}-filters.png", stage.name
        ):
            names.append(f"{stage.name}-filters.png")
        if (stage.folder / "composition.png").is_file():
            shutil.copyfile(stage.folder / "composition.png", out / f"{stage.name}-composition.png")
            names.append(f"{stage.name}-composition.png")
        plots[stage.name] = names
    return plots


def _cell(value: Any, stderr: Any) -> str:
    if value is None:
        return "-"  # this point did not evaluate this domain (an expert is evaluated on its own domain)
    return fmt(value) + (f" ± {2 * stderr:.2g}" if isinstance(stderr, (int, float)) else "")


def chain_markdown(run: RunInfo) -> list[str]:
    """The chain's eval points as a table (± is twice the stderr over prompts: the eval's own noise)."""
    points, columns, cells = chain_table(run)
    if not points:
        return []
    lines = ["", "## The chain, eval by eval (± = 2 x stderr over prompts)", ""]
    lines += ["| point | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for point in points:
        lines.append(f"| {point} | " + " | ".join(_cell(*cells.get((point, c), (None, None))) for c in columns) + " |")
    return lines


def plot_chain(run: RunInfo, out: Path) -> bool:
    """pass@1 of every domain at every eval point, with 2-stderr error bars."""
    points, columns, cells = chain_table(run)
    columns = [c for c in columns if c.endswith(" pass@1")]
    if len(points) < 2 or not columns:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    for column in columns:
        values = [cells.get((p, column), (None, None)) for p in points]
        xs = [i for i, (v, _) in enumerate(values) if isinstance(v, (int, float))]
        ys = [values[i][0] for i in xs]
        errs = [2 * (values[i][1] or 0) for i in xs]
        ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=column.replace(" pass@1", ""))
    ax.set_xticks(range(len(points)), points, rotation=20)
    ax.set_ylabel("pass@1")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return True


def summary_markdown(run: RunInfo) -> str:
    lines = [
        f"# Report: {run.folder}",
        "",
        "| stage | type | status | wall time (s) | result |",
        "|---|---|---|---|---|",
    ]
    for s in run.stages:
        lines.append(
            f"| {s.name} | {s.type} | {s.status} | {fmt(s.wall_time_s) if s.manifest else ''} | {s.headline()} |"
        )
    evals = [(s.name, k, a, b) for s in run.stages for k, a, b in s.evals()]
    if evals:
        lines += ["", "## Evals, before -> after", "", "| stage | metric | before | after |", "|---|---|---|---|"]
        lines += [f"| {n} | {k} | {fmt(a)} | {fmt(b)} |" for n, k, a, b in evals]
    lines += chain_markdown(run)
    return "\n".join(lines) + "\n"


def write_report(run_folder: str | Path) -> Path:
    """Write `report/index.html`, `report/summary.md` and the figures for a run folder. Returns the page's path."""
    from posttrain.report_html import render_page

    run = read_run(run_folder)
    out = run.folder / "report"
    out.mkdir(exist_ok=True)
    plots = _plots(run, out)
    if plot_chain(run, out / "chain.png"):
        plots = {"the chain": ["chain.png"], **plots}
    samples = [record for stage in run.stages for record in stage_samples(stage)]
    (out / "summary.md").write_text(summary_markdown(run), encoding="utf-8")
    page = out / "index.html"
    page.write_text(render_page(run, plots, samples), encoding="utf-8")
    return page
