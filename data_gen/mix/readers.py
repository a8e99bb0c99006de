"""Streaming readers for mix sources: files are resolved, checked and cut into chunks without reading their rows.

A source is a JSONL file (cut at line boundaries every `chunk_bytes`), Parquet files (cut at row groups), a dataset
saved with `datasets.save_to_disk` (cut at record batches), or any other source string that
`data_gen.sources.load_source` knows (materialised once to Parquet). `open_source` checks what can be checked
cheaply (the files exist, the columns are right, there are rows) and raises a one-line `DataError` naming the
source, the file and the fix. `read_chunk` yields normalised Arrow tables: `messages` as
list<struct<role, content>>, `domain` as a string, and `row`, the row's index inside its chunk, so that a second
pass finds the same rows again. The write pass also asks for `KEPT_COLUMNS` (what a verifier needs to re-check a
row: `source_id` and the gold `answer`, `tests`, `entry_point`, `metadata`, `task` of rejection-sampling
datasets), as strings (JSON for anything that is not one), null where a source does not have them; the scan never
reads them.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import pyarrow.parquet as pq

from data_gen.mix.options import MixSource
from data_gen.sources import parse_source
from posttrain.errors import DataError

MESSAGE_TYPE = pa.struct([("role", pa.string()), ("content", pa.string())])
MESSAGES_TYPE = pa.list_(MESSAGE_TYPE)
# data_gen.rejection.GOLD_COLUMNS and source_id (not imported: the scan workers stay light).
KEPT_COLUMNS = ("source_id", "answer", "tests", "entry_point", "metadata", "task")
COLUMNS_FIX = "give each row 'messages' (a list of {role, content}) or 'prompt' and 'completion' columns"
Format = Literal["messages", "pair"]


@dataclass
class Chunk:
    """A slice of one file: Parquet row groups, JSONL bytes, or Arrow record batches [start, stop)."""

    file: str
    start: int
    stop: int


@dataclass
class SourceFiles:
    """A checked source: its files, their row format, and its chunks."""

    name: str
    kind: Literal["jsonl", "parquet", "arrow"]
    files: list[str]
    format: Format
    completion: str | None
    has_domain: bool
    chunks: list[Chunk] = field(default_factory=list)

    def stats(self) -> list[tuple[str, int, int]]:
        """(path, size, mtime_ns) of every file: what a resumed run compares before trusting cached work."""
        return [(f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in self.files]


def resolve(source: MixSource, work_dir: Path) -> tuple[str, list[str]]:
    """Source string -> (kind, files). Raises DataError when nothing is there."""
    name = source.label()
    ref = parse_source(source.spec)
    if not ref.is_file:
        return "parquet", [_materialise(source, work_dir)]
    scheme, path = ref.scheme, os.path.expanduser(ref.target)
    if scheme == "hf-disk" or os.path.isfile(os.path.join(path, "state.json")):
        return "arrow", _arrow_files(name, path)
    if os.path.isdir(path):
        for kind, pattern in (("parquet", "*.parquet"), ("jsonl", "*.jsonl")):
            files = sorted(glob.glob(os.path.join(path, pattern)))
            if files:
                return kind, files
        if os.path.isfile(os.path.join(path, "dataset_dict.json")):
            splits = sorted(p.name for p in Path(path).iterdir() if p.is_dir())
            raise DataError(f"source '{name}': {path} holds splits {splits}; point at one, e.g. {path}/{splits[0]}")
        raise DataError(f"source '{name}': folder {path} has no *.parquet or *.jsonl files; point at a dataset folder")
    files = sorted(glob.glob(path))
    if not files:
        raise DataError(f"source '{name}': file {path} does not exist; fix the path or run the stage that writes it")
    is_jsonl = scheme == "jsonl" or files[0].endswith((".jsonl", ".jsonl.gz", ".json"))
    return ("jsonl" if is_jsonl else "parquet"), files


def _materialise(source: MixSource, work_dir: Path) -> str:
    """A generated source (reasoning_gym:TASK, humaneval) -> one Parquet file in the work folder, written once.
    Rows with an `answer` but no `messages` become expert samples <problem, worked answer> (`data_gen.samples`)."""
    from data_gen.samples import expert_sample
    from data_gen.sources import load_source

    out = work_dir / f"source-{source.label()}.parquet"
    if not out.exists():
        ds = load_source(source.data)
        if "messages" not in ds.column_names and "answer" in ds.column_names:
            ds = ds.map(lambda row: expert_sample(row) or {"messages": []}, remove_columns=["prompt"])
        work_dir.mkdir(parents=True, exist_ok=True)
        ds.to_parquet(str(out) + ".tmp")
        os.replace(str(out) + ".tmp", out)
    return str(out)


def _arrow_files(name: str, path: str) -> list[str]:
    state = os.path.join(path, "state.json")
    if not os.path.isfile(state):
        raise DataError(f"source '{name}': {path} is not a folder written by save_to_disk (no state.json)")
    with open(state, encoding="utf-8") as f:
        files = [os.path.join(path, d["filename"]) for d in json.load(f)["_data_files"]]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise DataError(f"source '{name}': file {missing[0]} does not exist; save the dataset again")
    return files


def open_source(
    source: MixSource, work_dir: Path, chunk_rows: int = 50_000, chunk_bytes: int = 64 << 20
) -> SourceFiles:
    """Resolve, check and chunk a source, reading only metadata and one row of each JSONL file.

    Raises:
        DataError: a missing file, wrong columns, or no rows; the message names the source, file and fix.
    """
    name = source.label()
    kind, files = resolve(source, work_dir)
    columns = _columns(name, kind, files[0])
    fmt, completion = _row_format(name, files[0], columns)
    opened = SourceFiles(name, kind, files, fmt, completion, has_domain="domain" in columns)
    for path in files:
        if kind == "parquet":
            opened.chunks += _parquet_chunks(name, path, chunk_rows)
        elif kind == "jsonl":
            opened.chunks += _jsonl_chunks(path, chunk_bytes)
        else:
            opened.chunks += _arrow_chunks(path, chunk_rows)
    if not opened.chunks:
        raise DataError(f"source '{name}': {files[0]} has no rows; point the source at a non-empty file or drop it")
    return opened


def _columns(name: str, kind: str, path: str) -> dict[str, pa.DataType | None]:
    """Column name -> Arrow type (None for JSONL, where only the first row is looked at)."""
    try:
        if kind == "parquet":
            return {f.name: f.type for f in pq.read_schema(path)}
        if kind == "arrow":
            with pa.memory_map(path) as source:
                return {f.name: f.type for f in pa.ipc.open_stream(source).schema}
        with _open_text(path) as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise ValueError(f"line {lineno} is a JSON {type(row).__name__}, not an object")
                    return dict.fromkeys(row)
    except (OSError, ValueError, pa.ArrowInvalid) as e:
        raise DataError(f"source '{name}': cannot read {path} ({e}); check that it is a {kind} file") from None
    raise DataError(f"source '{name}': {path} has no rows; point the source at a non-empty file or drop it")


def _row_format(name: str, path: str, columns: dict) -> tuple[Format, str | None]:
    if "messages" in columns:
        kind = columns["messages"]
        ok = (
            kind is None
            or (pa.types.is_list(kind) or pa.types.is_large_list(kind))
            and all(
                pa.types.is_struct(kind.value_type) and kind.value_type.get_field_index(f) >= 0
                for f in ("role", "content")
            )
        )
        if not ok:
            raise DataError(f"source '{name}': {path} has a 'messages' column of type {kind}; {COLUMNS_FIX}")
        return "messages", None
    completion = next((c for c in ("completion", "response") if c in columns), None)
    if "prompt" in columns and completion:
        return "pair", completion
    raise DataError(f"source '{name}': {path} has no 'messages' column (columns: {', '.join(columns)}); {COLUMNS_FIX}")


def _parquet_chunks(name: str, path: str, chunk_rows: int) -> list[Chunk]:
    try:
        meta = pq.ParquetFile(path).metadata
    except (OSError, pa.ArrowInvalid) as e:
        raise DataError(f"source '{name}': cannot read {path} ({e}); rewrite it as Parquet") from None
    chunks, start, rows = [], 0, 0
    for g in range(meta.num_row_groups):
        rows += meta.row_group(g).num_rows
        if rows >= chunk_rows or g == meta.num_row_groups - 1:
            if rows:
                chunks.append(Chunk(path, start, g + 1))
            start, rows = g + 1, 0
    return chunks


def _jsonl_chunks(path: str, chunk_bytes: int) -> list[Chunk]:
    size = os.path.getsize(path)
    if path.endswith(".gz"):
        return [Chunk(path, 0, size)] if size else []
    chunks, start = [], 0
    with open(path, "rb") as f:
        while start < size:
            f.seek(min(start + chunk_bytes, size))
            f.readline()
            stop = min(f.tell(), size) if start + chunk_bytes < size else size
            chunks.append(Chunk(path, start, stop))
            start = stop
    return chunks


def _arrow_chunks(path: str, chunk_rows: int) -> list[Chunk]:
    chunks, start, rows = [], 0, 0
    with pa.memory_map(path) as source:
        reader = pa.ipc.open_stream(source)
        i = -1
        for i, batch in enumerate(reader):
            rows += batch.num_rows
            if rows >= chunk_rows:
                chunks.append(Chunk(path, start, i + 1))
                start, rows = i + 1, 0
        if rows:
            chunks.append(Chunk(path, start, i + 1))
    return chunks


def _open_text(path: str):
    return gzip.open(path, "rt", encoding="utf-8") if path.endswith(".gz") else open(path, encoding="utf-8")


def read_chunk(
    src: SourceFiles, chunk: Chunk, domain: str | None, batch_rows: int = 8192, keep_columns: bool = False
) -> Iterator[pa.Table]:
    """Yield normalised tables (`messages`, `domain`, `row`, and with `keep_columns` every `KEPT_COLUMNS` as a
    string column) for one chunk, at most `batch_rows` rows each.

    `row` numbers the chunk's rows from 0. Raises DataError for a malformed JSONL line (naming the file and line).
    """
    columns = ["messages"] if src.format == "messages" else ["prompt", src.completion]
    if src.has_domain:
        columns.append("domain")
    if keep_columns:
        columns += [c for c in KEPT_COLUMNS if c not in columns]
    offset = 0
    for raw in _raw_batches(src, chunk, columns, batch_rows, keep_columns):
        table = normalise(raw, src.format, src.completion, domain, offset)
        if keep_columns:
            for name in KEPT_COLUMNS:
                column = raw[name].combine_chunks() if name in raw.column_names else pa.nulls(raw.num_rows)
                table = table.append_column(name, as_text(column))
        yield table
        offset += raw.num_rows


def as_text(arr: pa.Array) -> pa.Array:
    """A column as strings: strings as they are, nulls as nulls, anything else as JSON."""
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type) or pa.types.is_null(arr.type):
        return arr.cast(pa.string())
    values = arr.to_pylist()
    return pa.array([None if v is None else json.dumps(v, default=str) for v in values], pa.string())


def _raw_batches(
    src: SourceFiles, chunk: Chunk, columns: list[str], batch_rows: int, optional: bool = False
) -> Iterator[pa.Table]:
    """Raw batches of the chunk's `columns`; with `optional`, columns beyond the first two may be missing."""
    if src.kind == "parquet":
        pf = pq.ParquetFile(chunk.file)
        names = set(pf.schema_arrow.names)
        groups = list(range(chunk.start, chunk.stop))
        present = [c for c in columns if c in names] if optional else columns
        for batch in pf.iter_batches(batch_size=batch_rows, row_groups=groups, columns=present):
            yield pa.Table.from_batches([batch])
    elif src.kind == "arrow":
        with pa.memory_map(chunk.file) as source:
            reader = pa.ipc.open_stream(source)
            present = [c for c in columns if c in reader.schema.names] if optional else columns
            for i, batch in enumerate(reader):
                if chunk.start <= i < chunk.stop:
                    for start in range(0, batch.num_rows, batch_rows):
                        yield pa.Table.from_batches([batch.slice(start, batch_rows)]).select(present)
    else:
        yield from _jsonl_batches(src, chunk, columns, batch_rows, optional)


def _jsonl_batches(
    src: SourceFiles, chunk: Chunk, columns: list[str], batch_rows: int, infer: bool = False
) -> Iterator[pa.Table]:
    """Parse a byte range of whole lines with Arrow's JSON reader; fall back to `json` for a precise error."""
    if chunk.file.endswith(".gz"):
        with gzip.open(chunk.file, "rb") as f:
            blocks: Iterator[bytes] = iter([f.read()])
    else:
        blocks = _byte_blocks(chunk, 8 << 20)
    base = chunk.start
    for block in blocks:
        try:
            table = _parse_json(block, src.format, infer)
        except pa.ArrowInvalid:
            table = _parse_json_rows(block, src, chunk.file, base, columns if infer else [])
        base += len(block)
        for start in range(0, table.num_rows, batch_rows):
            yield table.slice(start, batch_rows).select([c for c in columns if c in table.column_names])


def _byte_blocks(chunk: Chunk, block_bytes: int) -> Iterator[bytes]:
    with open(chunk.file, "rb") as f:
        f.seek(chunk.start)
        left, carry = chunk.stop - chunk.start, b""
        while left > 0:
            data = carry + f.read(min(block_bytes, left))
            left = chunk.stop - f.tell()
            cut = data.rfind(b"\n") + 1 if left > 0 else len(data)
            if cut == 0:  # a single line longer than the block: keep reading
                carry = data
                continue
            carry = data[cut:]
            yield data[:cut]


def _parse_json(block: bytes, fmt: Format, infer: bool = False) -> pa.Table:
    """Parse with Arrow; `infer` also parses the fields beyond messages and domain (their types inferred)."""
    schema = None
    if fmt == "messages":
        schema = pa.schema([("messages", MESSAGES_TYPE), ("domain", pa.string())])
    behaviour = "ignore" if schema is not None and not infer else "infer"
    options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior=behaviour)
    read = pj.ReadOptions(block_size=max(len(block), 1 << 20), use_threads=False)
    return pj.read_json(io.BytesIO(block), read_options=read, parse_options=options)


def _parse_json_rows(block: bytes, src: SourceFiles, path: str, base: int, keep: list[str] | None = None) -> pa.Table:
    """Line-by-line parse: rows whose messages have the wrong shape become empty (chat validation drops them);
    a line that is not JSON raises a DataError with its line number. `keep`: also these fields (as JSON text
    unless they are strings)."""
    rows = []
    for i, line in enumerate(block.split(b"\n")):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError(f"expected a JSON object, got {type(row).__name__}")
        except ValueError as e:
            lineno = _line_number(path, base) + i
            raise DataError(f"source '{src.name}': {path}:{lineno}: {e}; fix or delete the line") from None
        clean = _clean_row(row, src.format, src.completion)
        for name in keep or ():
            if name in KEPT_COLUMNS:
                value = row.get(name)
                clean[name] = value if value is None or isinstance(value, str) else json.dumps(value, default=str)
        rows.append(clean)
    return pa.Table.from_pylist(rows)


def _clean_row(row: dict, fmt: Format, completion: str | None) -> dict:
    def messages(value: object) -> list[dict] | None:
        if isinstance(value, str):
            return None
        ok = isinstance(value, list) and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
        )
        return [{"role": m["role"], "content": m["content"]} for m in value] if ok else []

    out: dict = {"domain": row["domain"] if isinstance(row.get("domain"), str) else None}
    if fmt == "messages":
        out["messages"] = messages(row.get("messages"))
    else:
        for key in ("prompt", completion):
            value = row.get(key)
            out[key] = value if isinstance(value, str) else messages(value) or []
    return out


def _line_number(path: str, offset: int) -> int:
    if path.endswith(".gz"):
        return 1
    with open(path, "rb") as f:
        return f.read(offset).count(b"\n") + 1


def normalise(raw: pa.Table, fmt: Format, completion: str | None, domain: str | None, offset: int) -> pa.Table:
    """Raw columns -> `messages` (list<struct<role, content>>, nulls as empty lists), `domain`, `row`."""
    if fmt == "messages":
        messages = _as_messages(raw["messages"].combine_chunks(), None)
    else:
        prompt = _as_messages(raw["prompt"].combine_chunks(), "user")
        answer = _as_messages(raw[completion].combine_chunks(), "assistant")
        messages = _concat_lists(prompt, answer)
    n = raw.num_rows
    if domain is not None or "domain" not in raw.column_names:
        domains = pa.array([domain or "general"] * n, pa.string())
    else:
        domains = pc.fill_null(raw["domain"].combine_chunks().cast(pa.string()), "general")
    rows = pa.array(np.arange(offset, offset + n, dtype=np.int64))
    return pa.table({"messages": messages, "domain": domains, "row": rows})


def _as_messages(arr: pa.Array, role: str | None) -> pa.ListArray:
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        content = arr.cast(pa.string())
        valid = np.asarray(content.is_valid())
        offsets = np.concatenate([[0], np.cumsum(valid)]).astype(np.int32)
        values = pa.StructArray.from_arrays(
            [pa.array([role] * int(valid.sum()), pa.string()), content.filter(pa.array(valid))], ["role", "content"]
        )
        return pa.ListArray.from_arrays(pa.array(offsets), values)
    if pa.types.is_null(arr.type):
        return pa.array([[]] * len(arr), MESSAGES_TYPE)
    lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False)
    flat = pc.list_flatten(arr)
    values = pa.StructArray.from_arrays(
        [flat.field("role").cast(pa.string()), flat.field("content").cast(pa.string())], ["role", "content"]
    )
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def _concat_lists(a: pa.ListArray, b: pa.ListArray) -> pa.ListArray:
    """Row-wise concatenation of two list arrays of the same length."""
    la, lb = np.diff(a.offsets.to_numpy()), np.diff(b.offsets.to_numpy())
    values = pa.concat_arrays([a.values, b.values])
    row_len = la + lb
    out_off = np.concatenate([[0], np.cumsum(row_len)])
    pos = np.arange(out_off[-1]) - np.repeat(out_off[:-1], row_len)
    row = np.repeat(np.arange(len(row_len)), row_len)
    from_a = pos < la[row]
    index = np.where(
        from_a, a.offsets.to_numpy()[row] + pos, len(a.values) + b.offsets.to_numpy()[row] + pos - la[row]
    )
    return pa.ListArray.from_arrays(pa.array(out_off.astype(np.int32)), values.take(pa.array(index)))
