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
    by_source = remaining(pool, "source", copies)
    by_domain = remaining(pool, "domain", copies)
    num_bytes = np.zeros(len(pool.source_names))
    domains: list[set[int]] = [set() for _ in pool.source_names]
    for i, c in enumerate(pool.chunks):
        if c.num_rows:
            domain, size = pool.chunk_arrays(i, "domain", "num_bytes")
            num_bytes[c.source] += float(size.sum())
            domains[c.source].update(np.unique(domain).tolist())
    for s, name in enumerate(pool.source_names):
        lo, hi = pool.source_range(s)
        mine = copies[lo:hi]
        out, used = int(mine.sum()), int((mine > 0).sum())
        by_source[name].update(
            target=wanted[s],
            output=out,
            repeats=round(out / used, 3) if used else 0.0,  # copies per row taken: > 1 when upsampled
            num_repeated_rows=int((mine > 1).sum()),
            domains=sorted(pool.domain_names[d] for d in domains[s]),
            mb_text=round(num_bytes[s] / 1e6, 1),
        )
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
        "upsampled row), `source_row` (row number in its source), and what a verifier needs to re-check a row, "
        "kept from sources that have them and null otherwise: `source_id`, `answer`, `tests`, `entry_point`, "
        "`metadata`, `task` (strings; JSON for structured values).",
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
        f"a pair at Jaccard {s['near_threshold']} becomes a candidate with probability {s['p_at_threshold']:.3f}, "
        f"and a candidate is removed when its signature agrees with the earlier row's on at least "
        f"{s.get('verify_at') or 0:.3f} (estimated Jaccard, from the values' low bytes)."
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
    it shares an n-gram with, whichever step removed it). Built one chunk at a time."""
    names = pa.array(pool.source_names, pa.string())
    evals = pa.array(eval_names or [""], pa.string())
    columns: dict[str, list] = {k: [] for k in ("global", "source", "row", "step", "reason", "num_tokens", "contam")}
    for i, c in enumerate(pool.chunks):
        local = np.flatnonzero(pool.removed_at[c.start : c.stop] > 0) if c.num_rows else []
        if not len(local):
            continue
        row, reason, num_tokens, contam = pool.chunk_arrays(i, "row", "reason", "num_tokens", "contam")
        columns["global"].append(c.start + local)
        columns["source"].append(np.full(len(local), c.source, np.int32))
        columns["row"].append(row[local].astype(np.int64) + c.row_offset)
        columns["step"].append(pool.removed_at[c.start + local])
        columns["reason"].append(reason[local])
        columns["num_tokens"].append(num_tokens[local])
        columns["contam"].append(contam[local])
    empty = {"global": np.int64, "source": np.int32, "row": np.int64, "step": np.uint8, "reason": np.uint8}
    empty.update(num_tokens=np.int32, contam=np.int32)
    arr = {k: np.concatenate(v) if v else np.zeros(0, empty[k]) for k, v in columns.items()}
    dup = np.full(len(arr["global"]), -1, np.int64)
    if len(pool.dup_rows):
        at = np.minimum(np.searchsorted(pool.dup_rows, arr["global"]), len(pool.dup_rows) - 1)
        found = pool.dup_rows[at] == arr["global"]
        dup[found] = pool.dup_of[at[found]]
    has_dup = dup >= 0
    dup_source, dup_row = _locate(pool, np.where(has_dup, dup, 0))
    contam = arr["contam"]
    return pa.table(
        {
            "source": names.take(pa.array(arr["source"])),
            "row": pa.array(arr["row"]),
            "step": pa.array(STEPS, pa.string()).take(pa.array(arr["step"].astype(np.int64))),
            "reason": _reasons(arr["step"], arr["reason"], arr["num_tokens"]),
            "duplicate_of_source": names.take(pa.array(dup_source, mask=~has_dup)),
            "duplicate_of_row": pa.array(dup_row, mask=~has_dup),
            "eval_item": evals.take(pa.array(np.maximum(contam, 0), mask=contam < 0)),
        }
    )


def _locate(pool: Pool, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(source, row inside the source) of global rows, reading each chunk's row numbers once."""
    starts = np.array([c.start for c in pool.chunks], np.int64)
    chunk = np.searchsorted(starts, rows, side="right") - 1
    source, row = np.zeros(len(rows), np.int32), np.zeros(len(rows), np.int64)
    for i in np.unique(chunk):
        c, mine = pool.chunks[i], np.flatnonzero(chunk == i)
        (local,) = pool.chunk_arrays(int(i), "row")
        source[mine] = c.source
        row[mine] = local[rows[mine] - c.start].astype(np.int64) + c.row_offset
    return source, row


def _reasons(step: np.ndarray, reason: np.ndarray, num_tokens: np.ndarray) -> pa.Array:
    fixed = {
        "exact_dedup": "same normalised text",
        "near_dedup": "shares an LSH band, signatures agree",
        "decontaminate": "n-gram overlap",
    }
    out = np.array([fixed.get(name, "") for name in STEPS], object)[step]
    chat = step == STEPS.index("chat_format")
    out[chat] = np.array([CHAT_REASONS.get(r, "invalid") for r in range(256)], object)[reason[chat]]
    for k in np.flatnonzero(step == STEPS.index("token_length")):
        n = int(num_tokens[k])
        out[k] = (
            f"{n} tokens"
            if n >= 0
            else f"{-n}+ tokens (counting stopped past the limit)"
            if n < -1
            else "longer than the limit (by its byte count)"
        )
    return pa.array(out.tolist(), pa.string())


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
