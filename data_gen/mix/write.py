"""Writing the mix: an external shuffle into sharded Parquet, in parallel and resumable.

Pass 1, one task per source chunk: read the chunk again, give every copy of a selected row (repeated for
upsampled ones) its shuffled position (`sample.positions`), take the rows in shard order and write them to one
Arrow IPC file per chunk, grouped by shard (a small `.npy` beside it counts each shard's record batches). Pass 2,
one task per shard: read the shard's batches from every chunk file (memory-mapped), sort by position, write
`part-NNNNN.parquet` under a temporary name and rename it, then mark it done. Both passes run on the build's workers; a task holds one chunk or one shard. A rerun keeps
the shards marked done and the chunk files already written.

The output columns are fixed (`OUTPUT_SCHEMA`): the conversation, where it came from, and the columns a verifier
needs to re-check it (`readers.KEPT_COLUMNS`), null for rows of sources that do not have them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from data_gen.mix.readers import KEPT_COLUMNS, MESSAGES_TYPE, SourceFiles, read_chunk
from data_gen.mix.sample import positions as copy_positions
from data_gen.mix.scan import largest_first

OUTPUT_SCHEMA = pa.schema(
    [
        ("messages", MESSAGES_TYPE),
        ("source", pa.string()),
        ("domain", pa.string()),
        ("repeat", pa.int32()),
        ("source_row", pa.int64()),
        *[(name, pa.string()) for name in KEPT_COLUMNS],
    ]
)
_BUCKET_SCHEMA = OUTPUT_SCHEMA.append(pa.field("position", pa.int64()))
# Dictionary-encode only the small repeated columns; message contents are unique text, where a dictionary is
# built only to be thrown away.
_DICTIONARY_COLUMNS = ["source", "domain", "messages.list.element.role", "task"]
_ROW_GROUP = 10_000


@dataclass
class ChunkSelection:
    """The rows to take from one chunk: their places in the chunk's scan arrays, copies of each, and the index
    of the chunk's first copy among all copies (copies are numbered in global row order)."""

    source: SourceFiles
    chunk_index: int
    name: str
    domain: str | None
    scan_file: Path
    chosen: np.ndarray  # int64, increasing: indices into the chunk's scan arrays
    copies: np.ndarray  # uint32 per chosen row
    first_copy: int
    row_offset: int


def shard_name(shard: int) -> str:
    return f"part-{shard:05d}.parquet"


def write_shards(
    selections: list[ChunkSelection],
    num_rows: int,
    rows_per_shard: int,
    seed: int,
    out_dir: Path,
    work_dir: Path,
    workers: Any,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write `num_rows` rows as `part-*.parquet` in `out_dir` on `workers`. Returns the number of shards."""
    num_shards = max(1, -(-num_rows // rows_per_shard))
    out_dir.mkdir(parents=True, exist_ok=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    done = {
        s for s in range(num_shards) if (work_dir / f"done-{s:05d}").exists() and (out_dir / shard_name(s)).exists()
    }
    for stale in out_dir.glob("part-*.parquet*"):
        if stale.name not in {shard_name(s) for s in done}:
            stale.unlink()  # from an interrupted run: half-written or not yet marked done
    buckets = work_dir / "buckets"
    buckets.mkdir(exist_ok=True)
    for tmp in buckets.glob("*.tmp"):
        tmp.unlink()
    files = [buckets / f"chunk-{i:05d}.arrow" for i in range(len(selections))]
    todo = [s for s in range(num_shards) if s not in done]
    if progress:
        progress(len(done) + (len(selections) if not todo else 0))
    if todo:
        fill = [
            (sel, num_rows, rows_per_shard, num_shards, seed, path)
            for sel, path in zip(selections, files)
            if not path.exists()
        ]
        if progress:
            progress(len(selections) - len(fill))
        order = largest_first([(task[0].name, task[0].source.chunks[task[0].chunk_index]) for task in fill])
        workers.map(_fill_bucket, [fill[k] for k in order], progress)
        shards = [
            (files, s, out_dir / shard_name(s), _expected(s, num_rows, rows_per_shard), work_dir / f"done-{s:05d}")
            for s in todo
        ]
        workers.map(_finish_shard, shards, progress)
    shutil.rmtree(buckets, ignore_errors=True)
    return num_shards


def _expected(shard: int, num_rows: int, rows_per_shard: int) -> int:
    return min(rows_per_shard, num_rows - shard * rows_per_shard)


def _fill_bucket(
    sel: ChunkSelection, num_rows: int, rows_per_shard: int, num_shards: int, seed: int, path: Path
) -> None:
    """The selected copies of one chunk to `path`, grouped by shard: each read batch is taken in shard order, and
    its slice for a shard is written as one record batch (no second copy of the rows); `<path>.npy` gets the
    number of record batches of every shard."""
    parts = list(_selected_rows(sel, num_rows, seed, rows_per_shard))
    counts = np.zeros(num_shards, np.int64)
    tmp = path.with_name(path.name + ".tmp")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, _BUCKET_SCHEMA) as writer:
        bounds = [np.searchsorted(shard_of, np.arange(num_shards + 1)) for _, shard_of in parts]
        for shard in range(num_shards):
            for (table, _), b in zip(parts, bounds):
                if b[shard + 1] > b[shard]:
                    for batch in table.slice(b[shard], b[shard + 1] - b[shard]).to_batches():
                        writer.write_batch(batch)
                        counts[shard] += 1
    np.save(_counts_path(tmp), counts)
    os.replace(_counts_path(tmp), _counts_path(path))
    os.replace(tmp, path)


def _counts_path(path: Path) -> Path:
    return path.with_name(path.name + ".npy")


def _selected_rows(sel: ChunkSelection, num_rows: int, seed: int, rows_per_shard: int):
    """Yield (bucket-schema table, shard of each row) for the selected rows of one chunk, copies included, each
    table in shard order."""
    from data_gen.mix.scan import load_chunk

    local_rows = load_chunk(sel.scan_file, ("row",))["row"][sel.chosen].astype(np.int64)
    copies = sel.copies.astype(np.int64)
    copy_start = np.concatenate([[0], np.cumsum(copies)])
    for table in read_chunk(sel.source, sel.source.chunks[sel.chunk_index], sel.domain, keep_columns=True):
        rows = table["row"].to_numpy()
        lo, hi = np.searchsorted(local_rows, [rows[0], rows[-1] + 1])
        if lo == hi:
            continue
        picked = local_rows[lo:hi] - rows[0]
        mine = copies[lo:hi]
        take = np.repeat(picked, mine)
        repeat = np.arange(len(take)) - np.repeat(copy_start[lo:hi] - copy_start[lo], mine)
        position = copy_positions(sel.first_copy + int(copy_start[lo]), len(take), num_rows, seed)
        shard_of = position // rows_per_shard
        order = np.argsort(shard_of, kind="stable")
        take, repeat, position, shard_of = take[order], repeat[order], position[order], shard_of[order]
        source_row = (local_rows[lo:hi].repeat(mine) + sel.row_offset)[order]
        chosen = table.take(pa.array(take))
        columns = {
            "messages": chosen["messages"],
            "source": pa.array([sel.name] * len(take), pa.string()),
            "domain": chosen["domain"],
            "repeat": pa.array(repeat.astype(np.int32)),
            "source_row": pa.array(source_row),
            **{name: chosen[name] for name in KEPT_COLUMNS},
            "position": pa.array(position),
        }
        yield pa.table(columns, schema=_BUCKET_SCHEMA), shard_of


def _finish_shard(files: list[Path], shard: int, out: Path, expected: int, done: Path) -> None:
    table = _read_shard(files, shard)
    assert table.num_rows == expected, f"shard {out.name}: {table.num_rows} rows in its buckets, expected {expected}"
    order = pc.sort_indices(table["position"])
    # One contiguous copy: a take from a chunked nested column concatenates its chunks on every call (a shard
    # written in ten row groups took 5.6x as long). The memory-mapped batches are let go as soon as it is made.
    table = table.drop_columns(["position"]).combine_chunks()
    tmp = out.with_name(out.name + ".tmp")
    with pq.ParquetWriter(tmp, OUTPUT_SCHEMA, use_dictionary=_DICTIONARY_COLUMNS) as writer:
        for start in range(0, max(len(order), 1), _ROW_GROUP):  # one row group in memory at a time, sorted
            writer.write_table(table.take(order.slice(start, _ROW_GROUP)), row_group_size=_ROW_GROUP)
    os.replace(tmp, out)
    done.touch()
    del table
    pa.default_memory_pool().release_unused()  # a worker holds a shard's worth less between tasks


def _read_shard(files: list[Path], shard: int) -> pa.Table:
    """One shard's record batches from every chunk file, memory-mapped (the batches' buffers keep each map alive)."""
    batches = []
    for path in files:
        counts = np.load(_counts_path(path))
        if counts[shard]:
            reader = pa.ipc.open_file(pa.memory_map(str(path)))
            first = int(counts[:shard].sum())
            batches += [reader.get_batch(i) for i in range(first, first + int(counts[shard]))]
    return pa.Table.from_batches(batches, _BUCKET_SCHEMA)
