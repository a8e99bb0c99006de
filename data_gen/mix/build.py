"""`build_mix`: sources in, a deduplicated, decontaminated, weighted and shuffled SFT mix out.

The order of work:
1. open every source (cheap checks: files, columns, rows) and cut it into chunks;
2. scan the chunks in worker processes: chat format, token length, exact hash, MinHash bands, eval n-grams;
3. in the parent, over 1 byte per row held in memory (the rest read back from the scan files one chunk at a time):
   decontamination, exact dedup, near dedup, per-step counts;
4. sample the surviving rows to the targets (upsampling with recorded repeats; 4 more bytes per row) and shuffle;
5. write the shards (external shuffle, on the same workers), then the card, the plot, `removed.parquet` and
   `composition.json`.

Everything is deterministic for a seed, whatever the number of workers. Work is cached under `work_dir` keyed by
a fingerprint of the settings and the source files (sizes and mtimes): an interrupted build resumes from its last
complete scan chunk or shard; a finished one is returned as it is.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from data_gen.mix import pool as pool_ops
from data_gen.mix import report
from data_gen.mix.decontam import EvalIndex, load_index
from data_gen.mix.hashing import candidate_probability, lsh_params, verify_cutoff
from data_gen.mix.options import Decontam, Dedup, MixSource, check_sources
from data_gen.mix.readers import SourceFiles, open_source
from data_gen.mix.sample import sample
from data_gen.mix.scan import ScanSettings, run_scan
from data_gen.mix.workers import Workers
from data_gen.mix.write import ChunkSelection, shard_name, write_shards
from posttrain.errors import ConfigError

VERSION = 5  # bump when the scan's hashes or verdicts change, so that cached work is not reused
LSH_RECALL = 0.98  # P(a pair at the threshold shares a band): generous, candidates are checked on signatures


@dataclass
class MixResult:
    """Where the mix went and what is in it."""

    out_dir: Path
    num_rows: int
    num_shards: int
    composition: dict[str, Any]
    metrics: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)


def build_mix(
    sources: list[MixSource | str],
    out_dir: str | Path,
    size: int | None = None,
    seed: int = 0,
    *,
    dedup: Dedup | None = None,
    decontaminate: Decontam | None = None,
    tokenizer: Any = None,
    max_tokens: int | None = None,
    rows_per_shard: int = 100_000,
    num_workers: int = 0,
    chunk_rows: int = 50_000,
    report_dir: str | Path | None = None,
    work_dir: str | Path | None = None,
    keep_work: bool = False,
    title: str | None = None,
    show_progress: bool = True,
) -> MixResult:
    """Build an SFT mix.

    Args:
        sources: `MixSource`s, or source strings (all their rows, or equal shares of `size`).
        out_dir: dataset folder for `part-*.parquet` and the card `README.md`.
        size: rows in the mix; None: the sources' counts, or all their surviving rows.
        seed: seeds sampling and shuffling.
        dedup: exact and near dedup settings (default `Dedup()`; near dedup off with `near_threshold=None`).
        decontaminate: eval sets and n-gram size (default `Decontam()`: HumanEval; `against=[]` turns it off).
        tokenizer: a tokenizer, or a name/path ('embedded', a folder); needed with `max_tokens`.
        max_tokens: drop conversations longer than this many tokens (chat template included).
        rows_per_shard: rows per Parquet shard.
        num_workers: scan processes; 0: one per CPU core.
        chunk_rows: rows per scan chunk (Parquet row groups and Arrow batches are merged up to this); the unit
            of parallel work and of resuming. JSONL files are cut every 64 MB.
        report_dir: where `composition.json`, `composition.png` and `removed.parquet` go (default: beside out_dir).
        work_dir: cache for resuming (default: `<out_dir>.work`); removed on success unless `keep_work`.
        title: the card's title.
        show_progress: progress bars on stderr.
    Returns:
        MixResult with the composition and flat metrics.
    Raises:
        ConfigError: inconsistent options. DataError: a source that is missing, has wrong columns or no rows.
    """
    sources = [MixSource(data=s) if isinstance(s, str) else s for s in sources]
    dedup, decontaminate = dedup or Dedup(), decontaminate or Decontam()
    _check(sources, size, dedup, decontaminate, tokenizer, max_tokens)
    out_dir = Path(out_dir)
    report_dir = Path(report_dir) if report_dir else out_dir.parent
    work_dir = Path(work_dir) if work_dir else out_dir.with_name(out_dir.name + ".work")
    opened = [open_source(s, work_dir, chunk_rows=chunk_rows) for s in sources]
    settings = _settings(dedup, decontaminate, tokenizer, max_tokens)
    fingerprint = _digest(
        {
            "settings": settings,
            "size": size,
            "seed": seed,
            "rows_per_shard": rows_per_shard,
            "sources": [[asdict(s), o.stats()] for s, o in zip(sources, opened)],
        }
    )
    files = {"dataset": out_dir, "card": out_dir / "README.md", "plot": report_dir / "composition.png"}
    files.update(removed=report_dir / "removed.parquet", composition=report_dir / "composition.json")
    finished = _finished(files, fingerprint)
    if finished is not None:
        return MixResult(
            out_dir, finished["num_output"], finished["num_shards"], finished, report.metrics(finished), files
        )
    with Workers(num_workers) as workers:
        scan_dirs, index = _scan(sources, opened, settings, decontaminate, tokenizer, work_dir, workers, show_progress)
        pool = _resolve(sources, opened, scan_dirs, settings, workers)
        ranges = [pool.source_range(s) for s in range(len(sources))]
        copies, wanted = sample(sources, ranges, pool.removed_at == 0, size, seed)
        num_rows = int(copies.sum())
        selections = _selections(sources, opened, pool, copies)
        num_shards = -(-num_rows // rows_per_shard)
        with _progress(show_progress, len(selections) + max(num_shards, 1), "write chunks+shards") as bar:
            num_shards = write_shards(
                selections,
                num_rows,
                rows_per_shard,
                seed,
                out_dir,
                work_dir / f"write-{fingerprint}",
                workers,
                bar.update,
            )
    info = {
        "seed": seed,
        "size": size,
        "fingerprint": fingerprint,
        "num_shards": num_shards,
        "settings": settings,
        "decontam": _decontam_info(decontaminate, index),
    }
    comp = report.composition(pool, copies, wanted, info)
    _write_reports(comp, pool, index.names if index else [], files, title or f"SFT mix ({out_dir.name})")
    if not keep_work:
        shutil.rmtree(work_dir, ignore_errors=True)
    return MixResult(out_dir, num_rows, num_shards, comp, report.metrics(comp), files)


def _check(
    sources: list[MixSource], size: int | None, dedup: Dedup, decontaminate: Decontam, tokenizer: Any, max_tokens: Any
) -> None:
    """Raise one ConfigError with every problem; warn about settings that a source ignores."""
    problems = [f"sources.{i}.{p}" for i, src in enumerate(sources) for p in src.check()]
    problems += check_sources(sources, size) + [f"dedup.{p}" for p in dedup.check()]
    problems += [f"decontaminate.{p}" for p in decontaminate.check()]
    if max_tokens is not None and tokenizer is None:
        problems.append("max_tokens: the token-length filter needs a `tokenizer`")
    if problems:
        raise ConfigError(problems)
    for src in sources:
        if src.is_file() and (src.data.size is not None or src.data.shuffle or src.data.args):
            warnings.warn(
                f"source '{src.label()}': size, shuffle and args apply to generated sources only and are "
                "ignored for files; use `count` to take fewer rows",
                stacklevel=3,
            )


def _settings(dedup: Dedup, decontaminate: Decontam, tokenizer: Any, max_tokens: int | None) -> dict[str, Any]:
    near = dedup.near_threshold
    bands, rows = lsh_params(near, dedup.num_perm, LSH_RECALL) if near else (0, 0)
    name = tokenizer if isinstance(tokenizer, str) or tokenizer is None else getattr(tokenizer, "name_or_path", "?")
    return {
        "version": VERSION,
        "exact": dedup.exact,
        "near_threshold": dedup.near_threshold,
        "num_perm": dedup.num_perm,
        "shingle_size": dedup.shingle_size,
        "bands": bands,
        "rows": rows,
        "p_at_threshold": candidate_probability(near, bands, rows) if bands else None,
        "verify_at": round(verify_cutoff(near, bands * rows), 4) if bands else None,
        "decontaminate": [asdict(s) for s in decontaminate.against],
        "ngram": decontaminate.ngram,
        "min_ngram": decontaminate.min_ngram,
        "max_items": decontaminate.max_items,
        "tokenizer": name if max_tokens is not None else None,
        "max_tokens": max_tokens,
    }


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _finished(files: dict[str, Path], fingerprint: str) -> dict[str, Any] | None:
    """The composition of a finished build with the same fingerprint whose files are all there, else None."""
    path = files["composition"]
    if not path.exists():
        return None
    comp = json.loads(path.read_text(encoding="utf-8"))
    shards = [files["dataset"] / shard_name(i) for i in range(comp.get("num_shards", 0))]
    complete = all(p.exists() for p in [*files.values(), *shards])
    return comp if comp.get("fingerprint") == fingerprint and complete else None


def _scan(
    sources: list[MixSource],
    opened: list[SourceFiles],
    settings: dict,
    decontaminate: Decontam,
    tokenizer: Any,
    work_dir: Path,
    workers: Workers,
    show_progress: bool,
) -> tuple[list[Path], EvalIndex | None]:
    """Scan every source into its own cache folder, keyed by what the scan depends on (not weights or counts)."""
    scan_keys = {k: v for k, v in settings.items() if k not in ("near_threshold", "p_at_threshold", "verify_at")}
    dirs = []
    for src, files in zip(sources, opened):
        key = {
            "settings": scan_keys,
            "data": asdict(src.data),
            "domain": src.domain,
            "domains": src.domains,
            "files": files.stats(),
            "chunks": [asdict(c) for c in files.chunks],
        }
        dirs.append(work_dir / "scan" / f"{files.name}-{_digest(key)}")
    for stale in (work_dir / "scan").glob("*") if (work_dir / "scan").exists() else []:
        if stale not in dirs:
            shutil.rmtree(stale, ignore_errors=True)
    index = load_index(decontaminate) if decontaminate.against else None
    if settings["max_tokens"] is not None and isinstance(tokenizer, str) and not os.path.isdir(tokenizer):
        from posttrain.model.loading import resolve_model

        tokenizer = resolve_model(tokenizer)  # once here ('embedded' may convert), so that workers load a folder
    scan = ScanSettings(
        sources=opened,
        domains=[s.domain for s in sources],
        keep_domains=[s.domains for s in sources],
        out_dirs=dirs,
        exact=settings["exact"],
        bands=settings["bands"],
        rows=settings["rows"],
        shingle_size=settings["shingle_size"],
        num_perm=settings["num_perm"],
        tokenizer=tokenizer if settings["max_tokens"] is not None else None,
        max_tokens=settings["max_tokens"],
        eval_index=index,
    )
    with _progress(show_progress, sum(len(o.chunks) for o in opened), "scan chunks") as bar:
        run_scan(scan, workers, bar.update)
    return dirs, index


def _resolve(sources: list[MixSource], opened: list[SourceFiles], dirs: list[Path], settings: dict, workers: Workers):
    pool = pool_ops.load_pool([o.name for o in opened], dirs, [len(o.chunks) for o in opened])
    pool_ops.decontaminate(pool)
    if settings["exact"]:
        pool_ops.dedup_exact(pool)
    if settings["bands"]:
        pool_ops.dedup_near(pool, settings["bands"], settings["verify_at"], workers=workers)
    return pool


def _selections(
    sources: list[MixSource], opened: list[SourceFiles], pool: Any, copies: np.ndarray
) -> list[ChunkSelection]:
    """Per chunk with rows in the mix: which of its scanned rows, how often, and the number of its first copy."""
    out, first_copy = [], 0
    for c in pool.chunks:
        chosen = np.flatnonzero(copies[c.start : c.stop])
        start, first_copy = first_copy, first_copy + int(copies[c.start : c.stop].sum(dtype=np.int64))
        if len(chosen) == 0:
            continue
        out.append(
            ChunkSelection(
                source=opened[c.source],
                chunk_index=c.index,
                name=opened[c.source].name,
                domain=sources[c.source].domain,
                scan_file=c.path,
                chosen=chosen,
                copies=copies[c.start + chosen],
                first_copy=start,
                row_offset=c.row_offset,
            )
        )
    return out


def _decontam_info(decontaminate: Decontam, index: EvalIndex | None) -> dict | None:
    if index is None:
        return None
    return {
        "against": [s.source for s in decontaminate.against],
        "ngram": decontaminate.ngram,
        "num_items": index.num_items,
        "num_skipped": index.num_skipped,
        "num_template_ngrams": index.num_template_ngrams,
    }


def _write_reports(comp: dict, pool: Any, eval_names: list[str], files: dict[str, Path], title: str) -> None:
    report.plot(comp, files["plot"])
    plot_ref = os.path.relpath(files["plot"], files["card"].parent)
    report.write_text(files["card"], report.card(comp, title, plot_ref))
    report.write_parquet(files["removed"], report.removed_table(pool, eval_names))
    report.write_json(files["composition"], comp)  # last: its presence with the fingerprint marks the build done


def _progress(show: bool, total: int, desc: str):
    from posttrain.progress import progress_bar  # the stage's display on the terminal (posttrain.recipe.console)

    return progress_bar(total, desc, unit="chunks", disable=not show)
