"""Text hashing for dedup and decontamination, vectorised over a batch of conversations with numpy and Arrow.

Everything starts from one lower-cased copy of a batch's message contents (`TextBuffer`), cut into tokens by a
byte mask, never into Python strings or Arrow lists of strings:

- words (for near dedup and decontamination): runs of ASCII letters and digits and of non-ASCII bytes (so accented
  and non-Latin letters count as letters), and each arithmetic operator `+ * / = < > ^ %` as a word of its own, and
  `-` too unless it joins two letters ("well-known" is two words, "4 - 3" three): without them "4 + 3" and "4 - 3"
  were the same words, so an eval sum flagged every training row asking its difference. Everything else breaks
  words. Each word is hashed from its bytes packed
  eight to a 64-bit lane (one gather per 8 bytes, a splitmix64 finaliser in between), so a word of up to 8 bytes
  gets a hash no other such word has.
- exact-dedup hash: the same over whitespace-separated tokens (punctuation kept: "2+2" and "2-2" differ), then a
  polynomial over the tokens of each message and over the (role, message) pairs of each conversation. Equal hashes
  <=> the same roles and the same lower-cased, whitespace-collapsed, trimmed text (up to 64-bit collisions).
  Whitespace is ASCII whitespace and the Unicode space characters (no-break, em, ideographic...).
- `Windows`: hashes of every run of n consecutive words inside one conversation (shingles, n-grams), from one
  prefix sum whatever n.
- `minhash`: MinHash signatures with K affine permutations `(a * x + b) mod 2**32` of the shingles' top 32 bits;
  one vectorised pass per permutation over each cache-sized block of the batch.
- `band_hashes` / `lsh_params`: LSH banding. Bands and rows are picked so that a pair at the threshold is caught
  with at least a given probability while as few pairs below it as possible are. Candidate pairs are then checked
  on their signatures' low bytes (`b_bit_jaccard` against `verify_cutoff`), so the banding can be generous.

Hash constants come from a fixed seed: the same text gets the same hashes in every process and every run.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

_RNG = np.random.default_rng(0x5F3759DF)
MULT = _RNG.integers(1, 2**63, size=64, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
# bytes.translate tables: 1 for a byte inside a word (ASCII letters, digits, any non-ASCII byte), else 0; and 1 for
# a byte inside a whitespace-separated token (anything but ASCII whitespace), else 0.
_WORD_TABLE = bytes(1 if (c >= 128 or chr(c).isalnum()) else 0 for c in range(256))
_TOKEN_TABLE = bytes(0 if c in (9, 10, 11, 12, 13, 28, 29, 30, 31, 32) else 1 for c in range(256))
_OPERATORS = b"+-*/=<>^%"
_OPERATOR_TABLE = bytes(1 if c in _OPERATORS else 0 for c in range(256))
_OPERATOR_BYTES = [bytes([c]) for c in _OPERATORS]
_LETTER_TABLE = bytes(1 if (c >= 128 or chr(c).isalpha()) else 0 for c in range(256))
# _LANE_MASK[k] keeps the first k bytes of a little-endian 64-bit lane.
_LANE_MASK = np.array([(1 << (8 * k)) - 1 for k in range(8)] + [2**64 - 1], np.uint64)
_LONG_TOKEN = 64  # tokens longer than this many bytes are hashed with xxh3, one Python call each


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads every input bit over the whole output (a bijection; returns a new array)."""
    x = x ^ (x >> np.uint64(30))
    x *= _MIX1
    x ^= x >> np.uint64(27)
    x *= _MIX2
    x ^= x >> np.uint64(31)
    return x


def _string_buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(data bytes, offsets) of a string array; offsets index into data, one per element plus one."""
    arr = arr.cast(pa.large_string()) if not pa.types.is_large_string(arr.type) else arr
    offsets = np.frombuffer(arr.buffers()[1], np.int64)[arr.offset : arr.offset + len(arr) + 1]
    data = arr.buffers()[2]
    return (np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)), offsets


class TextBuffer:
    """The lower-cased bytes of a batch of messages, and their tokens as (start, stop) byte ranges."""

    def __init__(self, contents: pa.Array):
        lowered = pc.utf8_lower(pc.fill_null(contents, ""))
        data, offsets = _string_buffers(lowered)
        self.offsets = offsets - offsets[0]
        self.num_msgs = len(contents)
        self.raw = bytes(data[offsets[0] : offsets[-1]])
        size = len(self.raw)
        padded = self.raw + bytes(8)  # so that a 64-bit lane (or a 3-byte sequence) can be read at any byte
        self.bytes = np.frombuffer(padded, np.uint8)
        self.lanes = np.ndarray((size + 1,), "<u8", padded, 0, (1,))

    def tokens(self, table: bytes, spaces: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(starts, stops) of the maximal runs of bytes that `table` maps to 1, never across two messages; with
        `spaces`, the Unicode space characters also break runs."""
        inside = np.frombuffer(self.raw.translate(table), np.bool_)
        if spaces:
            inside = self._unicode_spaces(inside)
        return self._runs(inside)

    def words(self) -> tuple[np.ndarray, np.ndarray]:
        """(starts, stops) of the words: runs of word bytes, and each operator byte alone (see the module doc)."""
        inside = np.frombuffer(self.raw.translate(_WORD_TABLE), np.bool_)
        if not any(op in self.raw for op in _OPERATOR_BYTES):  # a byte search each: cheaper than a pass
            return self._runs(inside)
        ops = np.flatnonzero(np.frombuffer(self.raw.translate(_OPERATOR_TABLE), np.bool_))
        raw, size = self.bytes, len(self.raw)
        letter = np.frombuffer(_LETTER_TABLE, np.bool_)
        inner = (raw[ops] == ord("-")) & (ops > 0) & (ops + 1 < size)
        joins = np.zeros(len(ops), bool)
        joins[inner] = letter[raw[ops[inner] - 1]] & letter[raw[ops[inner] + 1]]
        return self._runs(inside, ops[~joins])

    def _runs(self, inside: np.ndarray, singles: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(starts, stops) of the runs of True in `inside` (bool, one per byte), cut where a message starts, and of
        the one-byte tokens at `singles` (positions where `inside` is False)."""
        size = len(inside)
        if size == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        padded = np.zeros(size + 2, np.bool_)
        padded[1:-1] = inside
        bounds = self.offsets[1:-1]
        bounds = bounds[(bounds > 0) & (bounds < size)]
        cross = bounds[inside[bounds] & inside[bounds - 1]]  # a run across two messages: a stop and a start there
        # One bool mark per position 0..size, set where a token starts, then reused for where one stops: two
        # cheap passes and a search over bools (a search over int8 differences took 4x as long).
        mark = padded[1:] > padded[:-1]
        mark[cross] = True
        if singles is not None:
            mark[singles] = True
        starts = np.flatnonzero(mark)
        np.less(padded[1:], padded[:-1], out=mark)
        mark[cross] = True
        if singles is not None:
            mark[singles + 1] = True
        return starts, np.flatnonzero(mark)

    def _unicode_spaces(self, inside: np.ndarray) -> np.ndarray:
        d = self.bytes
        lead = np.flatnonzero((d[: len(inside)] - np.uint8(0xC2)) <= np.uint8(0xE3 - 0xC2))
        if len(lead) == 0:
            return inside
        b0, b1, b2 = d[lead], d[lead + 1], d[lead + 2]
        two = (b0 == 0xC2) & ((b1 == 0x85) | (b1 == 0xA0))
        general = (b2 <= 0x8A) | (b2 == 0xA8) | (b2 == 0xA9) | (b2 == 0xAF)
        three = (
            ((b0 == 0xE1) & (b1 == 0x9A) & (b2 == 0x80))
            | ((b0 == 0xE2) & (b1 == 0x80) & (b2 >= 0x80) & general)
            | ((b0 == 0xE2) & (b1 == 0x81) & (b2 == 0x9F))
            | ((b0 == 0xE3) & (b1 == 0x80) & (b2 == 0x80))
        )
        if not (two.any() or three.any()):
            return inside
        inside = inside.copy()
        for k, at in ((0, lead[two | three]), (1, lead[two | three]), (2, lead[three])):
            inside[at + k] = 0
        return inside

    def token_hashes(self, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
        """uint64 hash of every byte range: lanes of 8 bytes folded through splitmix64, seeded by the length."""
        length = stops - starts
        h = mix64(self.lanes[starts] & _LANE_MASK[np.minimum(length, 8)] ^ length.astype(np.uint64) * _GOLDEN)
        longer = np.flatnonzero(length > 8)
        step = 8
        while len(longer) and step < _LONG_TOKEN:
            lane = self.lanes[starts[longer] + step] & _LANE_MASK[np.minimum(length[longer] - step, 8)]
            h[longer] = mix64(h[longer] ^ lane)
            step += 8
            longer = longer[length[longer] > step]
        if len(longer):
            view = memoryview(self.raw)
            h[longer] = [xxhash.xxh3_64_intdigest(view[a:b]) for a, b in zip(starts[longer], stops[longer])]
        return h

    def message_of(self, starts: np.ndarray) -> np.ndarray:
        """int64 message index of every token (tokens in order)."""
        counts = np.diff(np.searchsorted(starts, self.offsets))
        return np.repeat(np.arange(self.num_msgs, dtype=np.int64), counts)


def exact_hashes(roles: pa.Array, contents: pa.Array, conv_offsets: np.ndarray, text: TextBuffer | None = None):
    """One hash per conversation of its (role, normalised content) sequence.

    Normalisation: Unicode lower case; runs of whitespace become one space; leading and trailing whitespace of each
    message is dropped. Punctuation is kept ("2+2" and "2-2" differ).

    Args:
        roles, contents: string arrays with one element per message (nulls read as "").
        conv_offsets: int64 [num_convs + 1], message range of each conversation.
        text: the contents' `TextBuffer`, when the caller has one already.
    Returns:
        uint64 [num_convs].
    """
    text = text or TextBuffer(contents)
    starts, stops = text.tokens(_TOKEN_TABLE, spaces=True)
    msg_hash = _polynomial(text.token_hashes(starts, stops), text.message_of(starts), text.num_msgs)
    encoded = pc.dictionary_encode(pc.fill_null(roles, "").cast(pa.string()))
    role_hash = np.array(
        [xxhash.xxh3_64_intdigest(r.encode("utf-8")) for r in encoded.dictionary.to_pylist()], np.uint64
    )
    tagged = mix64(msg_hash ^ role_hash[encoded.indices.to_numpy()]) if len(msg_hash) else msg_hash
    conv = np.repeat(np.arange(len(conv_offsets) - 1), np.diff(conv_offsets))
    return _polynomial(tagged, conv, len(conv_offsets) - 1)


def _polynomial(values: np.ndarray, groups: np.ndarray, num_groups: int) -> np.ndarray:
    """mix64(count + sum_j values[j] * P**j) per group, j counting from 0 inside each group (groups sorted)."""
    out = np.zeros(num_groups, np.uint64)
    counts = np.bincount(groups, minlength=num_groups).astype(np.int64)
    if len(values):
        power, inverse = _powers(len(values) + 1)
        prefix = np.zeros(len(values) + 1, np.uint64)
        np.cumsum(values * power[: len(values)], out=prefix[1:])
        first = np.concatenate([[0], np.cumsum(counts)])
        out = (prefix[first[1:]] - prefix[first[:-1]]) * inverse[first[:-1]]
    return mix64(out + counts.astype(np.uint64))


def word_hashes(contents: pa.Array, text: TextBuffer | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Hash the words of every message.

    Returns:
        (hashes uint64 [num_words], message index int64 [num_words]), words in text order.
    """
    text = text or TextBuffer(contents)
    starts, stops = text.words()
    return text.token_hashes(starts, stops), text.message_of(starts)


def window_hashes(
    hashes: np.ndarray, groups: np.ndarray, n: int, whole_short: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Hash every run of `n` consecutive words that lies inside one group (conversation).

    Args:
        hashes: uint64 [W] word hashes; groups: int64 [W], non-decreasing group of each word.
        n: words per window.
        whole_short: a group with fewer than n words (but at least one) gets one window of all its words.
    Returns:
        (window hashes uint64 [M], group of each window int64 [M]), in order.
    """
    return Windows(hashes, groups).of(n, whole_short)


class Windows:
    """Word-window hashes of every length from one set of prefix sums.

    A window's hash is the polynomial sum(h[i + j] * P**j) mod 2**64, computed for all windows at once from prefix
    sums of h[t] * P**t, scaled back by P**-i (P is odd, so it has an inverse mod 2**64): a constant number of
    passes whatever the window length, and shingles and n-grams share the prefix sums. The word hashes are
    already uniform, so the windows need no finaliser.
    """

    def __init__(self, hashes: np.ndarray, groups: np.ndarray):
        self.hashes, self.groups = hashes, groups
        num = len(hashes)
        power, inverse = _powers(num + 1)
        self.inverse = inverse[: num + 1]
        self.prefix = np.zeros(num + 1, np.uint64)
        np.cumsum(hashes * power[:num], out=self.prefix[1:])

    def at(self, starts: np.ndarray | None, n: int) -> np.ndarray:
        """Hashes of the windows of `n` words that start at `starts` (each at most len - n; None: at every word
        that has n - 1 words after it), whatever their groups."""
        if starts is None:
            count = len(self.hashes) - n + 1
            return (self.prefix[n:] - self.prefix[:count]) * self.inverse[:count]
        return (self.prefix[starts + n] - self.prefix[starts]) * self.inverse[starts]

    def of(self, n: int, whole_short: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(window hashes uint64 [M], group of each window int64 [M]) for windows of `n` words."""
        groups, num = self.groups, len(self.hashes)
        if num == 0:
            return self.hashes, groups
        if num >= n:
            window = (self.prefix[n:] - self.prefix[: num - n + 1]) * self.inverse[: num - n + 1]
            valid = groups[n - 1 :] == groups[: num - n + 1]
            window, owner = window[valid], groups[: num - n + 1][valid]
        else:
            window, owner = np.zeros(0, np.uint64), np.zeros(0, groups.dtype)
        if whole_short:
            first = np.ones(num, bool)
            first[1:] = groups[1:] != groups[:-1]
            group_starts = np.flatnonzero(first)
            sizes = np.diff(np.append(group_starts, num))
            short = sizes < n
            if short.any():
                lo, hi = group_starts[short], group_starts[short] + sizes[short]
                extra = (self.prefix[hi] - self.prefix[lo]) * self.inverse[lo]
                window, owner = np.concatenate([window, extra]), np.concatenate([owner, groups[lo]])
                order = np.argsort(owner, kind="stable")
                window, owner = window[order], owner[order]
        return window, owner


_POWERS: list[np.ndarray] = []


def _powers(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(P**t, P**-t) mod 2**64 for t < size (at least), cached and grown by doubling."""
    if not _POWERS or len(_POWERS[0]) < size:
        length = max(size, 2 * len(_POWERS[0]) if _POWERS else 1 << 21)
        inv = np.uint64(pow(int(_GOLDEN), -1, 2**64))
        _POWERS[:] = [_cumpow(_GOLDEN, length), _cumpow(inv, length)]
    return _POWERS[0], _POWERS[1]


def _cumpow(base: np.uint64, length: int) -> np.ndarray:
    out = np.empty(length, np.uint64)
    out[0] = 1
    np.cumprod(np.full(length - 1, base, np.uint64), out=out[1:])
    return out


def permutations(num_perm: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) uint32 [num_perm]: the affine maps x -> a * x + b (mod 2**32) of MinHash; a is odd."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2**31, size=num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = rng.integers(0, 2**32, size=num_perm, dtype=np.uint32)
    return a, b


def minhash(
    shingles: np.ndarray,
    groups: np.ndarray,
    num_groups: int,
    perms: tuple[np.ndarray, np.ndarray],
    block: int = 1 << 16,
):
    """MinHash signatures.

    The shingles are taken in blocks of about `block` (whole groups), every permutation over one block before
    the next: a block stays in the CPU cache (1.5-2x faster than whole-batch passes, more on a busy machine).

    Args:
        shingles: uint64 [M] shingle hashes; groups: int64 [M] non-decreasing group of each.
        num_groups: G; groups without shingles get the all-ones signature (callers exclude them from LSH).
        perms: from `permutations`.
    Returns:
        uint32 [G, K].
    """
    a, b = perms
    sig = np.full((num_groups, len(a)), np.uint32(0xFFFFFFFF), np.uint32)
    if len(shingles) == 0:
        return sig
    x = (shingles >> np.uint64(32)).astype(np.uint32)
    first = np.ones(len(groups), bool)
    first[1:] = groups[1:] != groups[:-1]
    starts = np.flatnonzero(first)
    present = groups[starts]
    bounds = np.append(starts, len(x))
    values = np.empty(block + int(np.diff(bounds).max()), np.uint32)
    g = 0
    while g < len(starts):
        h = min(len(starts), max(g + 1, int(np.searchsorted(bounds, bounds[g] + block, side="right")) - 1))
        lo, hi = bounds[g], bounds[h]
        xs, v, rel = x[lo:hi], values[: hi - lo], starts[g:h] - lo
        out = np.empty((h - g, len(a)), np.uint32)
        for k in range(len(a)):
            np.multiply(xs, a[k], out=v)
            v += b[k]
            out[:, k] = np.minimum.reduceat(v, rel)
        sig[present[g:h]] = out
        g = h
    return sig


def band_hashes(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """uint64 [G, bands]: one hash per LSH band of `rows` signature values."""
    out = np.zeros((len(sig), bands), np.uint64)
    for band in range(bands):
        part = sig[:, band * rows : (band + 1) * rows].astype(np.uint64)
        out[:, band] = mix64((part * MULT[:rows]).sum(axis=1) + np.uint64(band))
    return out


def lsh_params(threshold: float, num_perm: int, recall: float = 0.95) -> tuple[int, int]:
    """(bands, rows) with bands * rows <= num_perm.

    The largest `rows` (the steepest S-curve, so the fewest candidates below the threshold) for which
    P(candidate | Jaccard = threshold) = 1 - (1 - t**rows)**bands reaches `recall`, using every permutation.
    """
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        if 1 - (1 - threshold**rows) ** bands >= recall:
            best = (bands, rows)
    return best


def verify_cutoff(threshold: float, num_perm: int) -> float:
    """Least estimated Jaccard similarity (share of agreeing MinHash values) that a candidate pair needs: three
    standard deviations of the estimate below the threshold, so that a pair at the threshold passes with
    probability ~0.999, while LSH collisions of dissimilar texts are dropped."""
    return threshold - 3 * (threshold * (1 - threshold) / num_perm) ** 0.5


def b_bit_jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Estimated Jaccard similarity per row from the low bytes of two signatures (uint8 [N, K] each): the share of
    equal bytes, less the 1/256 of chance agreement."""
    agree = (a == b).mean(axis=1)
    return (agree - 1 / 256) / (1 - 1 / 256)


def candidate_probability(jaccard: float, bands: int, rows: int) -> float:
    """P(a pair with this Jaccard similarity shares at least one band)."""
    return 1 - (1 - jaccard**rows) ** bands
