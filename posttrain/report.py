"""`posttrain report RUN_DIR`: one PNG of per-step metrics per stage and a markdown summary of every manifest.

Reads `<run>/<stage>/manifest.json` and `<run>/<stage>/metrics.jsonl` (one JSON object per logged step) and writes
`<run>/report/<stage>.png` and `<run>/report/summary.md`. Unfinished stages are listed as such.
"""

from __future__ import annotations

from pathlib import Path

from posttrain.errors import UserError
from posttrain.files import read_json, read_jsonl

PLOT_KEYS = ("loss", "eval_loss", "learning_rate", "grad_norm", "reward", "reward_std", "entropy", "kl")


def _rows(path: Path) -> list[dict]:
    return read_jsonl(path)  # a line cut by a kill is skipped


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


def write_report(run: str | Path) -> Path:
    """Write plots and summary.md for a run folder (`runs/<recipe>`). Returns the summary path."""
    run = Path(run)
    stage_dirs = sorted(p for p in run.iterdir() if p.is_dir() and p.name != "report") if run.is_dir() else []
    if not stage_dirs:
        raise UserError(f"'{run}' holds no stage folders; pass a run folder such as runs/<recipe>")
    out = run / "report"
    out.mkdir(exist_ok=True)
    lines = [
        f"# Report: {run}",
        "",
        "| stage | type | status | wall time (s) | key metrics |",
        "|---|---|---|---|---|",
    ]
    for stage_dir in stage_dirs:
        manifest_path = stage_dir / "manifest.json"
        manifest = read_json(manifest_path)
        if not isinstance(manifest, dict) or "type" not in manifest:
            lines.append(f"| {stage_dir.name} | ? | unfinished | | |")
        else:
            metrics = {k: v for k, v in manifest.get("metrics", {}).items() if isinstance(v, (int, float))}
            shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
            lines.append(f"| {stage_dir.name} | {manifest['type']} | done | {manifest['wall_time_s']} | {shown} |")
        rows = _rows(stage_dir / "metrics.jsonl")
        if rows and plot_metrics(rows, out / f"{stage_dir.name}.png", stage_dir.name):
            lines.append(f"\n![{stage_dir.name}]({stage_dir.name}.png)\n")
    summary = out / "summary.md"
    summary.write_text("\n".join(lines) + "\n")
    return summary
