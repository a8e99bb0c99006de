"""What the mix records about itself: the composition table, the dataset card, the composition plot, the list of
removed rows, and flat metrics for the stage manifest.

The composition counts the rows left after each quality step per source and per domain, then the output (with
upsampled repeats). `removed.parquet` lists every removed row with the step, the reason, the row it duplicates
and the eval item it overlaps, so that a count in the card can always be traced back to rows.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from data_gen.mix.pool import STEPS, Pool, remaining
from data_gen.mix.quality import CHAT_REASONS

STEP_LABELS = {
    "input": "input",
    "chat_format": "chat format",
    "token_length": "token length",
    "exact_dedup": "exact dedup",
    "near_dedup": "near dedup",
    "decontaminate": "decontamination",
    "output": "output",
}


def composition(pool: Pool, copies: np.ndarray, wanted: list[int], info: dict[str, Any]) -> dict[str, Any]:
    """Counts after every step per source and per domain, the output, and the settings that produced them."""
    by_source = remaining(pool, "source")
    by_domain = remaining(pool, "domain")
    for s, name in enumerate(pool.source_names):
        mine = pool.source == s
        out, used = int(copies[mine].sum()), int((copies[mine] > 0).sum())
        by_source[name].update(
            target=wanted[s],
            output=out,
            repeats=round(out / used, 3) if used else 0.0,  # copies per row taken: > 1 when upsampled
            num_repeated_rows=int((copies[mine] > 1).sum()),
            domains=sorted({pool.domain_names[d] for d in np.unique(pool.domain[mine])}),
            mb_text=round(float(pool.num_bytes[mine].sum()) / 1e6, 1),
        )
    out_by_domain = np.bincount(pool.domain, weights=copies, minlength=len(pool.domain_names))
    for d, name in enumerate(pool.domain_names):
        by_domain[name]["output"] = int(out_by_domain[d])
    removed = np.bincount(pool.removed_at, minlength=len(STEPS))
    return {
        **info,
        "num_input": len(pool),
        "num_output": int(copies.sum()),
        "removed": {step: int(removed[i]) for i, step in enumerate(STEPS) if i > 0},
        "sources": by_source,
        "domains": by_domain,
    }


def metrics(comp: dict[str, Any]) -> dict[str, Any]:
    """Flat metrics for the manifest: totals first, then per step, per source and per domain."""
    out: dict[str, Any] = {"rows_out": comp["num_output"], "rows_in": comp["num_input"]}
    out.update({f"removed.{step}": n for step, n in comp["removed"].items()})
    for group in ("sources", "domains"):
        for name, counts in comp[group].items():
            for step in [*STEPS, "output"]:
                out[f"{group[:-1]}.{name}.{step}"] = counts[step]
            if group == "sources":
                out[f"source.{name}.repeats"] = counts["repeats"]
    return out


def card(comp: dict[str, Any], title: str, plot_name: str | None) -> str:
    """Dataset card (markdown) with the composition tables."""
    total = max(comp["num_output"], 1)
    steps = [*STEPS, "output"]
    head = (
        "| source | domain | " + " | ".join(STEP_LABELS[s] for s in STEPS) + " | target | output | share | repeats |"
    )
    lines = [
        f"# {title}",
        "",
        f"{comp['num_output']:,} conversations from {len(comp['sources'])} sources ({comp['num_input']:,} rows in), "
        f"built by posttrain's SFT mix builder with seed {comp['seed']}. Load it with",
        "",
        "```python",
        'datasets.load_dataset("parquet", data_files="part-*.parquet", split="train")',
        "```",
        "",
        "Columns: `messages` (list of {role, content}), `source`, `domain`, `repeat` (0 for the first copy of an "
        "upsampled row), `source_row` (row number in its source).",
        "",
        "## Composition by source",
        "",
        "Rows left after each step, in order; `output` includes upsampled repeats.",
        "",
        head,
        "|" + "---|" * (len(steps) + 5),
    ]
    for name, c in comp["sources"].items():
        cells = " | ".join(f"{c[s]:,}" for s in STEPS)
        share = f"{100 * c['output'] / total:.1f}%"
        lines.append(
            f"| {name} | {', '.join(c['domains'])} | {cells} | {c['target']:,} | {c['output']:,} | {share} | "
            f"{c['repeats']} |"
        )
    totals = " | ".join(f"{sum(c[s] for c in comp['sources'].values()):,}" for s in STEPS)
    num_target = sum(c["target"] for c in comp["sources"].values())
    lines.append(f"| **total** | | {totals} | {num_target:,} | {comp['num_output']:,} | 100% | |")
    lines += [
        "",
        "## Composition by domain",
        "",
        "| domain | " + " | ".join(STEP_LABELS[s] for s in steps) + " | share |",
    ]
    lines.append("|" + "---|" * (len(steps) + 2))
    for name, c in comp["domains"].items():
        cells = " | ".join(f"{c[s]:,}" for s in steps)
        lines.append(f"| {name} | {cells} | {100 * c['output'] / total:.1f}% |")
    lines += ["", "## Quality steps", "", *_step_notes(comp), ""]
    if plot_name:
        lines += [f"![composition before and after each step]({plot_name})", ""]
    return "\n".join(lines)


def _step_notes(comp: dict[str, Any]) -> list[str]:
    r, s, d = comp["removed"], comp["settings"], comp.get("decontam")
    what = {
        "chat_format": "roles system/user/assistant, no empty turn, an optional system turn first, then user and "
        "assistant alternating, ending with the assistant.",
        "token_length": f"at most {s['max_tokens']} tokens with the chat template of `{s['tokenizer']}`."
        if s.get("max_tokens")
        else "off.",
        "decontaminate": f"{d['ngram']}-gram overlap with {d['num_items']:,} eval items of {', '.join(d['against'])}; "
        f"{d['num_skipped']} items too short to match, {d['num_template_ngrams']} template n-grams ignored."
        if d
        else "off.",
        "exact_dedup": "same roles and text after lower-casing and collapsing whitespace; the first row listed is kept."
        if s["exact"]
        else "off.",
        "near_dedup": f"MinHash over {s['shingle_size']}-word shingles, LSH {s['bands']} bands x {s['rows']} rows; "
        f"a pair at Jaccard {s['near_threshold']} is caught with probability {s['p_at_threshold']:.3f}."
        if s.get("near_threshold")
        else "off.",
    }
    notes = [f"- **{STEP_LABELS[step]}** ({r[step]:,} removed): {what[step]}" for step in STEPS[1:]]
    notes.append("- Every removed row is listed in `removed.parquet` with its step, reason and counterpart.")
    return notes


def plot(comp: dict[str, Any], path: Path) -> None:
    """PNG of the composition before and after each step, stacked by source and by domain."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [*STEPS, "output"]
    fig, axes = plt.subplots(1, 2, figsize=(14, 5), constrained_layout=True)
    for ax, group in zip(axes, ("sources", "domains")):
        bottom = np.zeros(len(steps))
        for name, counts in comp[group].items():
            values = np.array([counts[s] for s in steps], float)
            ax.bar([STEP_LABELS[s] for s in steps], values, bottom=bottom, label=name)
            bottom += values
        for x, total in enumerate(bottom):
            ax.annotate(f"{int(total):,}", (x, total), ha="center", va="bottom", fontsize=8)
        ax.set_title(f"rows by {group[:-1]} after each step")
        ax.set_ylabel("rows")
        ax.tick_params(axis="x", rotation=30)
        ax.legend(fontsize=8)
    _atomic(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


def removed_table(pool: Pool, eval_names: list[str]) -> pa.Table:
    """One row per removed input row: source, row, step, reason, duplicate_of_source/row, eval_item (the eval item
    it shares an n-gram with, whichever step removed it)."""
    idx = np.flatnonzero(pool.removed_at > 0)
    step = pool.removed_at[idx]
    names = pa.array(pool.source_names, pa.string())
    dup = pool.dup_of[idx]
    has_dup = dup >= 0
    dup_safe = np.where(has_dup, dup, 0)
    contam = pool.contam[idx]  # also for rows another step removed: they overlap the eval set all the same
    reasons = [_reason(int(s), int(r), int(t)) for s, r, t in zip(step, pool.reason[idx], pool.num_tokens[idx])]
    return pa.table(
        {
            "source": names.take(pa.array(pool.source[idx])),
            "row": pa.array(pool.row[idx]),
            "step": pa.array(STEPS, pa.string()).take(pa.array(step.astype(np.int64))),
            "reason": pa.array(reasons, pa.string()),
            "duplicate_of_source": names.take(pa.array(pool.source[dup_safe], mask=~has_dup)),
            "duplicate_of_row": pa.array(pool.row[dup_safe], mask=~has_dup),
            "eval_item": pa.array([eval_names[c] if c >= 0 else None for c in contam], pa.string()),
        }
    )


def _reason(step: int, reason: int, num_tokens: int) -> str:
    name = STEPS[step]
    if name == "chat_format":
        return CHAT_REASONS.get(reason, "invalid")
    if name == "token_length":
        return f"{num_tokens} tokens" if num_tokens >= 0 else "longer than the limit (by its byte count)"
    return {"exact_dedup": "same normalised text", "near_dedup": "shares an LSH band"}.get(name, "n-gram overlap")


def write_json(path: Path, data: Any) -> None:
    _atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2, default=str), encoding="utf-8"))


def write_text(path: Path, text: str) -> None:
    _atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_parquet(path: Path, table: pa.Table) -> None:
    _atomic(path, lambda tmp: pq.write_table(table, tmp))


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    write(str(tmp))
    os.replace(tmp, path)
