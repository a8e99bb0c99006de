"""Chat-format validation and the token-length filter.

`validate_chat` checks every conversation of a batch at once (numpy over the flattened messages): roles are
system/user/assistant, no turn is empty, an optional system turn comes first, then user and assistant alternate
starting with the user, and the last turn is the assistant's.

`TokenLength` counts a conversation's tokens as the target model sees it: `len(tokenizer(apply_chat_template(
messages)))`, or the sum over contents when the tokenizer has no chat template. Tokenizing 1.5M conversations
takes many minutes on a CPU, so it tokenizes only the rows it has to: a byte-level tokenizer never makes more
tokens than the rendered text has bytes, and never fewer than bytes / (longest token in bytes). A conversation
whose upper bound fits `max_tokens` passes untouched, one whose lower bound exceeds it fails untouched, and only
those in between are tokenized. Those are counted piece by piece when the tokenizer allows it (a `tokenizer.json`
whose pre-tokenizer splits at spaces, checked at load): the rendered text is cut at single spaces between two
non-space characters, where no token can straddle the cut, so the counts of the pieces add up to the count of the
whole, and counting stops as soon as the limit is passed. Such rows record the count reached, negated.

With a GPT-2-style byte-level pre-tokenizer (`ByteLevel` with its regex, no normalizer that rewrites ASCII), the
rest of a text also has a lower bound: its ASCII words (runs of ASCII letters and digits with an ASCII non-word
character or an end on each side), since no pre-token of that regex holds letters or digits from two of them and
every pre-token is at least one token; added tokens ("<|im_start|>") are blanked before the words are counted.
Counting stops once the tokens so far plus the words left pass the limit: a conversation of 10,000 tokens and
3,600 words costs ~850 tokens of work at a 4,096 limit (~4,100 without the bound), one of more words than the limit
none.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

CHAT_REASONS = {
    1: "no messages",
    2: "unknown role (allowed: system, user, assistant)",
    3: "empty turn",
    4: "turns do not alternate user/assistant (system only first)",
    5: "last turn is not the assistant's",
}


# A cut between pieces: one space with a non-space character on each side.
_FIRST_PIECE_CHARS = 3  # characters per token assumed for the first piece
_CUT = re.compile(r"(?<=\S) (?=\S)")
# An ASCII word for the lower bound: a run of ASCII letters and digits (class 1 here), with an ASCII character that
# is neither (or an end) on each side. A run touching a non-ASCII character is not counted: "café" is one
# pre-token, "—.—" too.
_ASCII_WORD_CLASS = np.array([1 if chr(c).isalnum() else 0 for c in range(128)], np.uint8)
_PROBE_CHARS = 2048  # the first piece when the word bound is on: enough to measure tokens per word
# Pre-tokenizers that split at spaces (each piece is tokenized on its own), and normalizers that act per character.
_SPLITTING = {"ByteLevel", "Split", "Digits", "Punctuation", "Whitespace", "WhitespaceSplit", "BertPreTokenizer"}
_PER_CHAR_NORMALIZERS = {None, "NFC", "NFKC", "NFD", "NFKD", "Lowercase", "Strip", "StripAccents"}


def validate_chat(roles: pa.Array, contents: pa.Array, conv_offsets: np.ndarray) -> np.ndarray:
    """Reason code per conversation: 0 valid, else a key of CHAT_REASONS (the first that applies).

    Args:
        roles, contents: string arrays, one element per message.
        conv_offsets: int64 [num_convs + 1], message range of each conversation.
    Returns:
        uint8 [num_convs].
    """
    num_msgs = np.diff(conv_offsets)
    n = len(num_msgs)
    reason = np.zeros(n, np.uint8)
    if len(roles) == 0:
        reason[:] = 1
        return reason
    role_names = pc.fill_null(roles, "")
    code = np.full(len(roles), 3, np.int8)  # 0 system, 1 user, 2 assistant, 3 other
    for value, name in enumerate(("system", "user", "assistant")):
        code[np.asarray(pc.equal(role_names, name))] = value
    empty = np.asarray(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(pc.fill_null(contents, ""))), 0))
    conv = np.repeat(np.arange(n), num_msgs)
    pos = np.arange(len(code)) - conv_offsets[conv]
    has_system = np.zeros(n, bool)
    has_system[num_msgs > 0] = code[conv_offsets[:-1][num_msgs > 0]] == 0
    turn = pos - has_system[conv]
    expected = np.where(turn % 2 == 0, 1, 2)
    misplaced = (code != expected) & ~((code == 0) & (pos == 0))
    last = conv_offsets[1:][num_msgs > 0] - 1
    last_ok = np.ones(n, bool)
    last_ok[num_msgs > 0] = code[last] == 2
    checks = [
        (5, ~last_ok),
        (4, _any_per_conv(misplaced, conv, n)),
        (3, _any_per_conv(empty, conv, n)),
        (2, _any_per_conv(code == 3, conv, n)),
        (1, num_msgs == 0),
    ]
    for value, bad in checks:  # later checks overwrite earlier ones: the most basic problem is reported
        reason[bad] = value
    return reason


def _any_per_conv(flags: np.ndarray, conv: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(conv[flags], minlength=n) > 0


class TokenLength:
    """Counts tokens of conversations with a tokenizer and its chat template, tokenizing only when needed.

    Args:
        tokenizer: a tokenizer object, or a name/path that `posttrain.model.loading.load_tokenizer` resolves
            ('embedded', a local folder, a hub id in the local cache).
        max_tokens: conversations longer than this fail.
    """

    def __init__(self, tokenizer: Any, max_tokens: int):
        tokenizer = load_chat_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.has_template = bool(getattr(tokenizer, "chat_template", None))
        vocab = tokenizer.get_vocab()
        # Byte-level BPE spells each byte as one character ('Ġ' is a space): count characters, not UTF-8 bytes.
        byte_level = "Ġ" in vocab or "Ċ" in vocab
        self.max_token_bytes = max((len(t) if byte_level else len(t.encode("utf-8")) for t in vocab), default=1)
        self.base_bytes, self.msg_bytes = self._template_overhead()
        self.piecewise = self.has_template and _splits_at_spaces(tokenizer)
        self.added = _word_bound_added(tokenizer) if self.piecewise else None  # None: no word bound

    def _template_overhead(self) -> tuple[int, int]:
        """Bytes the chat template adds: a constant plus at most `msg_bytes` per message (measured, with margin)."""
        if not self.has_template:
            return 0, 1  # a SentencePiece tokenizer may add one prefix token per content
        sizes = []
        for roles in (("user", "assistant"), ("user", "assistant") * 2, ("system", "user", "assistant")):
            msgs = [{"role": r, "content": "x"} for r in roles]
            text = self.tokenizer.apply_chat_template(msgs, tokenize=False)
            sizes.append((len(roles), len(text.encode("utf-8")) - len(roles)))
        per_msg = max(
            (sizes[1][1] - sizes[0][1]) / 2, sizes[2][1] - sizes[0][1], 1
        )  # a system turn may cost more than a default system prompt saves
        base = max(s - per_msg * k for k, s in sizes)
        return int(base) + 16, int(np.ceil(per_msg)) + 8

    def count(self, conversations: list[list[dict]], stop_above: int | None = None) -> list[int]:
        """Exact token counts; with `stop_above` (and a piecewise tokenizer), a count may stop at the first piece
        that takes it past `stop_above` and is then returned negated."""
        tok = self.tokenizer
        if self.has_template:
            texts = [tok.apply_chat_template(c, tokenize=False) for c in conversations]
            if stop_above is not None and self.piecewise:
                return self._count_pieces(texts, stop_above)
            return [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]
        flat = [m["content"] for c in conversations for m in c]
        lengths = [len(ids) for ids in tok(flat, add_special_tokens=False)["input_ids"]] if flat else []
        sizes = np.cumsum([0] + [len(c) for c in conversations])
        return [int(sum(lengths[a:b])) for a, b in zip(sizes[:-1], sizes[1:])]

    def check(self, messages: pa.ListArray, content_bytes: np.ndarray, num_msgs: np.ndarray, rows: np.ndarray):
        """Token counts (-1: not needed, within bounds) and a too-long flag for the conversations `rows`.

        Args:
            messages: the batch's messages column; content_bytes / num_msgs: int64 per conversation.
            rows: int64 indices of the conversations to check (the valid ones).
        Returns:
            (num_tokens int32 [len(rows)], too_long bool [len(rows)]).
        """
        upper = content_bytes[rows] + self.base_bytes + self.msg_bytes * num_msgs[rows]
        lower = content_bytes[rows] // self.max_token_bytes
        num_tokens = np.full(len(rows), -1, np.int32)
        too_long = lower > self.max_tokens
        unsure = np.flatnonzero((upper > self.max_tokens) & ~too_long)
        if len(unsure):
            counts = np.asarray(self.count(messages.take(pa.array(rows[unsure])).to_pylist(), self.max_tokens))
            num_tokens[unsure] = counts
            too_long[unsure] = (counts > self.max_tokens) | (counts < 0)
        return num_tokens, too_long

    def _count_pieces(self, texts: list[str], stop_above: int) -> list[int]:
        """Token counts summed over pieces cut at spaces, one batch of pieces per round; a text stops once its count
        (plus, with the word bound, the ASCII words after the piece) passes `stop_above`, returned negated. The
        first piece is sized for `stop_above` tokens at 3 characters each (with the word bound, `_PROBE_CHARS`);
        later ones from the text's own characters per token so far, and with the word bound from its tokens per
        word too, whichever is shorter."""
        counts, pos = [0] * len(texts), [0] * len(texts)
        words = [self._word_starts(t) for t in texts] if self.added is not None else None
        want = [_FIRST_PIECE_CHARS * (stop_above + 1)] * len(texts)
        active = list(range(len(texts)))
        if words is not None:
            for i, starts in enumerate(words):
                if len(starts) > stop_above:  # the words alone pass the limit: no tokenizing
                    counts[i] = -len(starts)
            active = [i for i in active if counts[i] == 0]
            want = [min(w, _PROBE_CHARS) for w in want]
        while active:
            pieces = []
            for i in active:
                text, start = texts[i], pos[i]
                end = start + want[i]
                match = _CUT.search(text, end) if end < len(text) else None
                end = match.start() if match else len(text)
                pieces.append(text[start:end])
                pos[i] = end
            ids = self.tokenizer(pieces, add_special_tokens=False)["input_ids"]
            still = []
            for i, piece_ids in zip(active, ids):
                counts[i] += len(piece_ids)
                if pos[i] >= len(texts[i]):
                    continue
                # a cut is at a space, so no word straddles it: the words left start at or after pos[i]
                left = len(words[i]) - int(np.searchsorted(words[i], pos[i])) if words is not None else 0
                if counts[i] + left > stop_above:
                    counts[i] = -(counts[i] + left)
                    continue
                per_token = pos[i] / max(counts[i], 1)
                want[i] = int((stop_above + 1 - counts[i]) * per_token * 1.1) + 64
                if words is not None:
                    extra = (counts[i] - (len(words[i]) - left)) / pos[i]  # tokens beyond one per word, per char
                    if extra > 0:
                        want[i] = min(want[i], int((stop_above + 1 - counts[i] - left) / extra * 1.2) + 64)
                still.append(i)
            active = still
        return counts

    def _word_starts(self, text: str) -> np.ndarray:
        return ascii_word_starts(text, self.added)


def ascii_word_starts(text: str, added: re.Pattern) -> np.ndarray:
    """Sorted start offsets of the text's ASCII words (see the module doc), the `added` tokens blanked first."""
    if added.pattern:
        text = added.sub(lambda m: " " * len(m.group()), text)
    # One class per character (0: ASCII non-word, 1: ASCII letter or digit, 2: anything else), edges as 0.
    codes = np.frombuffer(text.encode("utf-32-le"), np.uint32)
    cls = np.zeros(len(codes) + 2, np.uint8)
    cls[1:-1] = np.where(codes < 128, _ASCII_WORD_CLASS[np.minimum(codes, 127)], 2)
    starts = np.flatnonzero((cls[1:-1] == 1) & (cls[:-2] != 1))
    stops = np.flatnonzero((cls[1:-1] == 1) & (cls[2:] != 1))
    pure = (cls[starts] == 0) & (cls[stops + 2] == 0)  # the characters before and after the run
    return starts[pure]


def _word_bound_added(tokenizer: Any) -> re.Pattern | None:
    """A regex of the added tokens' texts when the ASCII-word lower bound holds for `tokenizer` (a GPT-2-style
    `ByteLevel` pre-tokenizer with its regex, before or after other pre-tokenizers that only split further, and no
    normalizer but NFC), else None; checked on a sample text as well."""
    spec = json.loads(tokenizer._tok.to_str())
    pre, norm = spec.get("pre_tokenizer") or {}, spec.get("normalizer")
    parts = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    byte_level = [p for p in parts if p.get("type") == "ByteLevel" and p.get("use_regex", True)]
    if not byte_level or not all(p.get("type") in ("ByteLevel", "Digits") for p in parts):
        return None
    if norm is not None and norm.get("type") != "NFC":
        return None
    added = sorted((t["content"] for t in spec.get("added_tokens", []) if t.get("content")), key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(t) for t in added))
    sample = tokenizer.apply_chat_template(
        [
            {"role": "user", "content": "It's 2x faster—isn't it? café_au_lait, x+=1; <|im_start|> naïve 12,5kg"},
            {"role": "assistant", "content": "Well-known:  a.b.c — 3.75 ... don't ...'ll"},
        ],
        tokenize=False,
    )
    if len(ascii_word_starts(sample, pattern)) > len(tokenizer([sample], add_special_tokens=False)["input_ids"][0]):
        return None
    return pattern


def _splits_at_spaces(tokenizer: Any) -> bool:
    """Whether token counts add up over pieces cut at `_CUT`: a `tokenizer.json` pipeline that pre-tokenizes at
    spaces, no added token with a space in it, and a check on a sample text cut at every possible place."""
    inner = getattr(tokenizer, "_tok", None)
    if inner is None:
        return False
    spec = json.loads(inner.to_str())

    def kinds(node: Any) -> list:
        if not node:
            return [None]
        if node.get("type") == "Sequence":
            return [k for child in node.get("pretokenizers", node.get("normalizers", [])) for k in kinds(child)]
        return [node.get("type")]

    pre, norm = kinds(spec.get("pre_tokenizer")), kinds(spec.get("normalizer"))
    if not pre or None in pre or not set(pre) <= _SPLITTING or not set(norm) <= _PER_CHAR_NORMALIZERS:
        return False
    if any(re.search(r"\s", t.get("content", "")) for t in spec.get("added_tokens", [])):
        return False
    sample = tokenizer.apply_chat_template(
        [
            {"role": "user", "content": "Wie viele Äpfel? 12,5 kg + 3.75 = x; déjà-vu!"},
            {"role": "assistant", "content": "So: 2  or 3\n\n   it's 16.25 kg."},
        ],
        tokenize=False,
    )
    whole = len(tokenizer([sample], add_special_tokens=False)["input_ids"][0])
    for m in _CUT.finditer(sample):
        parts = tokenizer([sample[: m.start()], sample[m.start() :]], add_special_tokens=False)["input_ids"]
        if len(parts[0]) + len(parts[1]) != whole:
            return False
    return True


def load_chat_tokenizer(spec: str) -> Any:
    """A tokenizer by name or folder. A folder with `tokenizer.json` loads as `FastChatTokenizer` (no transformers,
    no torch: a scan worker starts in a fraction of a second with a tenth of the memory); anything else goes
    through `posttrain.model.loading.load_tokenizer`."""
    from posttrain.model.loading import load_tokenizer, resolve_model

    folder = Path(spec).expanduser()
    if not folder.is_dir():
        folder = Path(resolve_model(spec))
    if (folder / "tokenizer.json").is_file():
        try:
            return FastChatTokenizer(folder)
        except Exception:  # noqa: BLE001 - a template our renderer cannot compile: transformers can
            pass
    return load_tokenizer(spec)


class FastChatTokenizer:
    """The parts of a HF tokenizer that `TokenLength` uses, from `tokenizer.json` (Rust `tokenizers`) and the chat
    template rendered with jinja2 the way transformers does (sandboxed, trim_blocks, lstrip_blocks)."""

    def __init__(self, folder: Path):
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment
        from tokenizers import Tokenizer

        self.name_or_path = str(folder)
        self._tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        config_path = folder / "tokenizer_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
        template_path = folder / "chat_template.jinja"
        template = (
            template_path.read_text(encoding="utf-8") if template_path.is_file() else config.get("chat_template")
        )
        if isinstance(template, list):
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        self.chat_template = template
        self._special = {k: _token_text(config.get(k)) for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
        self._template = None
        if template:
            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
            env.filters["tojson"] = lambda x, indent=None, **_: json.dumps(x, ensure_ascii=False, indent=indent)
            env.globals["raise_exception"] = _raise
            self._template = env.from_string(template)

    def get_vocab(self) -> dict[str, int]:
        return self._tok.get_vocab()

    def apply_chat_template(self, messages: list[dict], tokenize: bool = False) -> str:
        assert not tokenize and self._template is not None
        return self._template.render(messages=messages, add_generation_prompt=False, **self._special)

    def __call__(self, texts: list[str], add_special_tokens: bool = True) -> dict[str, list[list[int]]]:
        encode = getattr(self._tok, "encode_batch_fast", self._tok.encode_batch)  # fast: no character offsets
        return {"input_ids": [e.ids for e in encode(texts, add_special_tokens=add_special_tokens)]}


def _token_text(value: Any) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


def _raise(message: str) -> None:
    from jinja2.exceptions import TemplateError

    raise TemplateError(message)
