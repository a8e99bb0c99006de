"""Writing the mix: an external shuffle into sharded Parquet, resumable shard by shard.

Pass 1 reads the sources again, chunk by chunk, takes the selected rows (repeated for upsampled ones) and appends
each copy to the bucket file (Arrow IPC) of the shard its shuffled position falls in. Pass 2 turns each bucket into
`part-NNNNN.parquet`: sorted by position, written to a temporary name and renamed, then marked done. Memory is
one chunk batch in pass 1 and one shard in pass 2. A rerun keeps shards marked done, and redoes pass 1 (skipping
done shards) only if it had not finished.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from data_gen.mix.readers import MESSAGES_TYPE, SourceFiles, read_chunk

OUTPUT_SCHEMA = pa.schema(
    [
        ("messages", MESSAGES_TYPE),
        ("source", pa.string()),
        ("domain", pa.string()),
        ("repeat", pa.int32()),
        ("source_row", pa.int64()),
    ]
)
_BUCKET_SCHEMA = OUTPUT_SCHEMA.append(pa.field("position", pa.int64()))
MAX_OPEN_BUCKETS = 128


@dataclass
class ChunkSelection:
    """The rows to take from one chunk: local row numbers (increasing), copies of each, and copy positions."""

    source: SourceFiles
    chunk_index: int
    name: str
    domain: str | None
    local_rows: np.ndarray
    copies: np.ndarray
    positions: np.ndarray
    row_offset: int


def shard_name(shard: int) -> str:
    return f"part-{shard:05d}.parquet"


def write_shards(
    selections: list[ChunkSelection],
    num_rows: int,
    rows_per_shard: int,
    out_dir: Path,
    work_dir: Path,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write `num_rows` rows as `part-*.parquet` in `out_dir`. Returns the number of shards."""
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
    todo = [s for s in range(num_shards) if s not in done]
    if todo and not (work_dir / "buckets.done").exists():
        shutil.rmtree(buckets, ignore_errors=True)
        buckets.mkdir()
        for first in range(0, len(todo), MAX_OPEN_BUCKETS):
            _fill_buckets(selections, todo[first : first + MAX_OPEN_BUCKETS], rows_per_shard, buckets)
        (work_dir / "buckets.done").touch()
    if progress:
        progress(len(done))
    for shard in todo:
        expected = min(rows_per_shard, num_rows - shard * rows_per_shard)
        _finish_shard(buckets / f"shard-{shard:05d}.arrow", out_dir / shard_name(shard), expected)
        (work_dir / f"done-{shard:05d}").touch()
        if progress:
            progress(1)
    shutil.rmtree(buckets, ignore_errors=True)
    return num_shards


def _fill_buckets(selections: list[ChunkSelection], shards: list[int], rows_per_shard: int, buckets: Path) -> None:
    wanted = np.zeros(max(shards) + 1, bool)
    wanted[shards] = True
    writers = {}
    try:
        for sel in selections:
            for table in _selected_rows(sel):
                shard_of = table["position"].to_numpy() // rows_per_shard
                mine = wanted[shard_of]
                if not mine.any():
                    continue
                table, shard_of = table.filter(pa.array(mine)), shard_of[mine]
                order = np.argsort(shard_of, kind="stable")
                table, shard_of = table.take(pa.array(order)), shard_of[order]
                bounds = np.flatnonzero(np.diff(shard_of)) + 1
                for start, stop in zip(np.r_[0, bounds], np.r_[bounds, len(shard_of)]):
                    shard = int(shard_of[start])
                    if shard not in writers:
                        sink = pa.OSFile(str(buckets / f"shard-{shard:05d}.arrow"), "wb")
                        writers[shard] = (sink, pa.ipc.new_stream(sink, _BUCKET_SCHEMA))
                    writers[shard][1].write_table(table.slice(start, stop - start))
    finally:
        for sink, writer in writers.values():
            writer.close()
            sink.close()


def _selected_rows(sel: ChunkSelection):
    """Yield bucket-schema tables of the selected rows of one chunk, copies included."""
    copy_start = np.concatenate([[0], np.cumsum(sel.copies, dtype=np.int64)])
    for table in read_chunk(sel.source, sel.source.chunks[sel.chunk_index], sel.domain):
        rows = table["row"].to_numpy()
        lo, hi = np.searchsorted(sel.local_rows, [rows[0], rows[-1] + 1])
        if lo == hi:
            continue
        picked = sel.local_rows[lo:hi] - rows[0]
        copies = sel.copies[lo:hi].astype(np.int64)
        take = np.repeat(picked, copies)
        first_copy = np.repeat(copy_start[lo:hi], copies)
        repeat = np.arange(len(take)) - np.repeat(np.cumsum(copies) - copies, copies)
        positions = sel.positions[first_copy + repeat]
        chosen = table.take(pa.array(take))
        yield pa.table(
            {
                "messages": chosen["messages"],
                "source": pa.array([sel.name] * len(take), pa.string()),
                "domain": chosen["domain"],
                "repeat": pa.array(repeat.astype(np.int32)),
                "source_row": pa.array(sel.local_rows[lo:hi].repeat(copies) + sel.row_offset),
                "position": pa.array(positions),
            },
            schema=_BUCKET_SCHEMA,
        )


def _finish_shard(bucket: Path, out: Path, expected: int) -> None:
    with pa.OSFile(str(bucket), "rb") as source:
        table = pa.ipc.open_stream(source).read_all()
    assert table.num_rows == expected, f"shard {out.name}: {table.num_rows} rows in its bucket, expected {expected}"
    table = table.take(pc.sort_indices(table["position"])).drop_columns(["position"])
    tmp = out.with_name(out.name + ".tmp")
    pq.write_table(table, tmp, row_group_size=10_000)
    os.replace(tmp, out)
