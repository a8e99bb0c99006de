"""Decontamination: find training conversations that share a word n-gram with an eval set.

The eval sets (HumanEval, reasoning-gym held-out sets, any file of rows with `prompt`/`messages`) are loaded with
`data_gen.sources.load_source`; each row's text (prompt, answer, reference solution) is split into words the same
way as training text (`hashing.word_hashes`), and every n-gram's hash goes into a sorted array. The parts of an
item are indexed apart: a short prompt followed by its answer ("... problem: 1 - 8 =" then "-7") is a text no
training conversation contains, while the prompt alone is one a training row asking the same question does.
N-grams found in more than `max_items` eval items are dropped as template text: an instruction shared by the whole
eval set would otherwise flag every training row that uses the same instruction. Parts shorter than `ngram` words but at least
`min_ngram` long match as a whole; shorter ones cannot be matched without false alarms, and an item with no part
that can be matched is counted as skipped.

Matching a batch costs one lookup per n-gram in a prefilter bitmap on the top bits of the hash (sized to the index,
so that it stays in the CPU cache and about 1 n-gram in 16 passes) and a binary search for the few that pass. The
short parts (a handful of lengths below `ngram`, often a few keys each) are not looked for at every word: only at
the words that start one (a bitmap of those first words), so each such length costs a few percent of a pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from data_gen.mix.hashing import Windows, window_hashes, word_hashes
from data_gen.mix.options import Decontam

TEXT_COLUMNS = ("answer", "canonical_solution", "completion", "response", "solution")
_MAX_PREFILTER_BITS = 24


@dataclass
class EvalIndex:
    """Sorted n-gram hashes of eval items, by window length, with the item each came from."""

    ngram: int
    names: list[str]
    tables: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    num_items: int = 0
    num_skipped: int = 0
    num_template_ngrams: int = 0
    first_words: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))  # of short parts
    _prefilter: np.ndarray | None = field(default=None, repr=False)
    _bits: int = field(default=0, repr=False)
    _first_prefilter: np.ndarray | None = field(default=None, repr=False)
    _first_bits: int = field(default=0, repr=False)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_prefilter"] = state["_first_prefilter"] = None  # rebuilt on first use: cheaper than pickling
        return state

    def match(self, windows: Windows, num_groups: int) -> np.ndarray:
        """Eval item index per group (conversation) sharing an n-gram with it, -1 for none.

        Args:
            windows: word windows of the batch (`hashing.Windows`), grouped by conversation.
        Returns:
            int32 [num_groups].
        """
        out = np.full(num_groups, -1, np.int32)
        num = len(windows.hashes)
        short = None
        for n, (keys, items) in self.tables.items():
            if num < n:
                continue
            if n == self.ngram:
                # Every window's hash, then the prefilter; the group check only for the few that pass it.
                grams = windows.at(None, n)
                bits, bitmap = self._bitmap()
                starts = np.flatnonzero(bitmap[grams >> np.uint64(64 - bits)])
                grams = grams[starts]
            else:
                # A whole short part: its first word must be one of the few that start such a part.
                if short is None:
                    bits, bitmap = self._first_word_bitmap()
                    short = np.flatnonzero(bitmap[windows.hashes >> np.uint64(64 - bits)])
                starts = short[short <= num - n]
                grams = windows.at(starts, n)
            groups = windows.groups
            pos = np.minimum(np.searchsorted(keys, grams), len(keys) - 1)
            hit = np.flatnonzero(keys[pos] == grams)
            hit = hit[groups[starts[hit] + n - 1] == groups[starts[hit]]]  # inside one conversation
            owner, found = groups[starts[hit]][::-1], items[pos[hit]][::-1]
            fresh = out[owner] < 0
            out[owner[fresh]] = found[fresh]  # reversed, so the first n-gram of a conversation wins
        return out

    def _bitmap(self) -> tuple[int, np.ndarray]:
        """One flag per range of n-gram hash values, set where the full-length table has a key: most n-grams stop
        here."""
        if self._prefilter is None:
            keys = self.tables.get(self.ngram, (np.zeros(0, np.uint64),))[0]
            self._bits, self._prefilter = _flags(keys)
        return self._bits, self._prefilter

    def _first_word_bitmap(self) -> tuple[int, np.ndarray]:
        """One flag per range of word hash values, set where a short part starts with such a word."""
        if self._first_prefilter is None:
            self._first_bits, self._first_prefilter = _flags(self.first_words)
        return self._first_bits, self._first_prefilter


def _flags(keys: np.ndarray) -> tuple[int, np.ndarray]:
    """(bits, flags): flags[k >> (64 - bits)] is set for every key k; about 1 value in 16 hits a set flag."""
    bits = int(np.clip(np.ceil(np.log2(max(len(keys), 1) * 16)), 10, _MAX_PREFILTER_BITS))
    flags = np.zeros(1 << bits, bool)
    flags[keys >> np.uint64(64 - bits)] = True
    return bits, flags


def eval_texts(options: Decontam) -> tuple[list[str], list[list[str]]]:
    """(item names, each item's texts: prompt, messages, answer or solution) of every eval set in `options.against`."""
    from data_gen.sources import load_source

    names, texts = [], []
    for src in options.against:
        ds = load_source(src)
        columns = set(ds.column_names)
        for i, row in enumerate(ds):
            parts = [row["code_prompt"]] if "code_prompt" in columns else _contents(row.get("prompt"))
            parts += _contents(row.get("messages"))
            parts += [str(row[c]) for c in TEXT_COLUMNS if c in columns and row[c] is not None]
            names.append(f"{src.source}:{row.get('source_id') or i}")
            texts.append([p for p in parts if p])
    return names, texts


def _contents(messages: object) -> list[str]:
    if isinstance(messages, str):
        return [messages]
    if isinstance(messages, list):
        return [m.get("content") or "" for m in messages if isinstance(m, dict)]
    return []


def build_index(
    names: list[str], texts: list[str | list[str]], ngram: int, min_ngram: int, max_items: int
) -> EvalIndex:
    """Index the n-grams of eval items, each a text or a list of its parts (see the module docstring for the
    rules)."""
    index = EvalIndex(ngram=ngram, names=names, num_items=len(texts))
    parts = [[t] if isinstance(t, str) else list(t) for t in texts]
    part_item = np.array([i for i, item in enumerate(parts) for _ in item], np.int64)
    if len(part_item) == 0:
        index.num_skipped = len(texts)
        return index
    hashes, part = word_hashes(pa.array([p for item in parts for p in item], pa.string()))
    num_words = np.bincount(part, minlength=len(part_item))
    matchable = np.zeros(len(texts), bool)
    matchable[part_item[num_words >= min_ngram]] = True
    index.num_skipped = int((~matchable).sum())
    lengths = {ngram} | {int(m) for m in np.unique(num_words) if min_ngram <= m < ngram}
    first_words: list[np.ndarray] = []
    for n in sorted(lengths):
        keep = num_words[part] >= n if n == ngram else num_words[part] == n
        grams, owner_part = window_hashes(hashes[keep], part[keep], n)
        if n < ngram:
            starts = np.flatnonzero(np.diff(part[keep], prepend=-1) != 0)  # the first word of each such part
            first_words.append(hashes[keep][starts])
        owner = part_item[owner_part]
        pairs = np.unique(np.stack([grams, owner.astype(np.uint64)]), axis=1)  # one (n-gram, item) pair each
        keys, first, counts = np.unique(pairs[0], return_index=True, return_counts=True)
        common = counts > max_items
        index.num_template_ngrams += int(common.sum())
        if (~common).any():
            index.tables[n] = (keys[~common], pairs[1][first[~common]].astype(np.int32))
    if first_words:
        index.first_words = np.unique(np.concatenate(first_words))
    return index


def load_index(options: Decontam) -> EvalIndex:
    """Load the eval sets of `options` and index them."""
    names, texts = eval_texts(options)
    return build_index(names, texts, options.ngram, options.min_ngram, options.max_items)
