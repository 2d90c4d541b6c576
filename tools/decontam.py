"""N-gram decontamination: find training rows that share a word n-gram (13 by default) with a benchmark's test set.

Text is normalised first (`tokens`): Unicode NFKC, casefold, every run of letters and every run of digits is a
token, everything else (punctuation, symbols, whitespace) is a separator. So "Janet’s ducks lay 16 eggs" and
"JANET'S ducks lay 16 eggs!" give the same tokens, and an inline note "<<16-3-4=9>>" becomes "16 3 4 9".

Short texts (fewer than n tokens) contribute one gram: their whole token sequence.
  * A short *test* text is therefore caught whenever a training text contains it verbatim (the index remembers
    the short lengths it holds, and queries are also windowed at those lengths).
  * A short *training* text is caught only when a test text equals it in full: a short phrase that merely
    occurs inside a long test item is ordinary shared wording, not leakage.
  * A text with no tokens at all has no grams and never matches.

Grams are stored as 64-bit hashes (a polynomial rolling hash over per-token random 64-bit values), so the index
is a sorted uint64 array plus a small CSR table of owners: a test set of a few thousand items takes a few MB. Only
tokens that occur in the test set get an id; any other token breaks every window it is in, which is both correct (such
a window cannot match) and what keeps queries cheap. The chance that two different grams collide is 2^-64 per
pair, i.e. negligible even for billions of query windows against the whole index.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

import numpy as np

DEFAULT_N = 13
_TOKEN = re.compile(r"\d+|[^\W\d_]+")  # digit runs, or runs of letters (word chars minus digits and "_")
_UNKNOWN = 0  # token id of anything absent from the test vocabulary, and of the separator between texts
_SEED = 0x5EED_DEC0  # fixed: an index built twice from the same texts is identical
_MULT = np.uint64(0x9E37_79B9_7F4A_7C15)  # odd, hence invertible mod 2^64 (keeps the hash uniform)
_CHUNK_ROWS = 4096  # rows per vectorised batch: large enough to amortise numpy calls, small enough for memory


def normalize(text: str) -> str:
    """The normalised form of `text`: its tokens joined by single spaces."""
    return " ".join(tokens(text))


def tokens(text: str) -> list[str]:
    """NFKC, casefold, then letter runs and digit runs; punctuation and whitespace only separate."""
    return _TOKEN.findall(unicodedata.normalize("NFKC", text).casefold())


@dataclass(frozen=True, eq=False)
class NgramIndex:
    """Hashed word n-grams of a test set, each mapped to the test ids that contain it."""

    n: int
    test_ids: tuple[str, ...]
    vocab: dict[str, int]
    """Test-set token -> id (ids start at 1; 0 is `_UNKNOWN`)."""
    token_values: np.ndarray
    """uint64 random value per token id, the terms of the rolling hash."""
    keys: np.ndarray
    """Sorted, unique uint64 gram hashes."""
    owner_offsets: np.ndarray
    """CSR offsets: owners of keys[i] are owners[owner_offsets[i]:owner_offsets[i + 1]]."""
    owners: np.ndarray
    """int32 positions in `test_ids`."""
    short_lengths: tuple[int, ...]
    """Token counts (< n) of short test texts, indexed whole; queries are also windowed at these lengths."""

    @classmethod
    def build(cls, test_texts: dict[str, str], n: int = DEFAULT_N) -> NgramIndex:
        """Index every n-gram of every test text (a short text is one gram: the whole of it)."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        test_ids = tuple(test_texts)
        vocab: dict[str, int] = {}
        encoded = []
        for text in test_texts.values():
            encoded.append([vocab.setdefault(t, len(vocab) + 1) for t in tokens(text)])
        rng = np.random.default_rng(_SEED)
        token_values = rng.integers(0, 2**64 - 1, size=len(vocab) + 1, dtype=np.uint64, endpoint=True)
        lengths = {len(ids) for ids in encoded if 0 < len(ids) < n}
        flat, starts = _concat(encoded)
        hashes, owner_rows = [], []
        for k in (n, *sorted(lengths)):
            h, pos = _window_hashes(flat, token_values, k)
            if k < n:  # a short length indexes only the texts that are exactly that long, whole
                row = np.searchsorted(starts, pos, side="right") - 1
                text_len = np.diff(np.append(starts, len(flat))) - 1  # minus the separator
                whole = (pos == starts[row]) & (text_len[row] == k)
                h, pos = h[whole], pos[whole]
            hashes.append(h)
            owner_rows.append(np.searchsorted(starts, pos, side="right") - 1)
        keys, owner_offsets, owners = _csr(np.concatenate(hashes), np.concatenate(owner_rows))
        return cls(n, test_ids, vocab, token_values, keys, owner_offsets, owners, tuple(sorted(lengths)))

    def __len__(self) -> int:
        """Number of distinct grams held."""
        return len(self.keys)

    def hits(self, text: str) -> set[str]:
        """Ids of the test texts that share at least one gram with `text`."""
        return {self.test_ids[i] for i in self._match([text])[0]}

    def _encode(self, text: str) -> list[int]:
        get = self.vocab.get
        return [get(t, _UNKNOWN) for t in tokens(text)]

    def _match(self, texts: list[str]) -> list[set[int]]:
        """For each text, the positions (in `test_ids`) of the test texts it shares a gram with."""
        encoded = [self._encode(t) for t in texts]
        flat, starts = _concat(encoded)
        found: list[set[int]] = [set() for _ in texts]
        if len(self.keys) == 0:  # an empty test set: nothing can match (and keys[at] below needs a key)
            return found
        for k in (self.n, *self.short_lengths):
            h, pos = _window_hashes(flat, self.token_values, k)
            at = np.searchsorted(self.keys, h)
            at[at == len(self.keys)] = 0  # past the end: compare against any key, the check below fails it
            hit = self.keys[at] == h
            if not hit.any():
                continue
            rows = np.searchsorted(starts, pos[hit], side="right") - 1
            # One (row, key) pair per distinct match: the owner lookup below is a Python loop, keep it short.
            pairs = np.unique(np.stack([rows, at[hit]], axis=1), axis=0)
            for row, key in pairs:
                found[row].update(self.owners[self.owner_offsets[key] : self.owner_offsets[key + 1]].tolist())
        return found


def find_contamination(rows: Iterable[tuple[str, str]], index: NgramIndex) -> dict[str, list[str]]:
    """Map each contaminated row id to the sorted test ids it shares a gram with; clean rows are left out.

    `rows` is (row_id, text); pass question and answer together as the text, so leakage in either is found.
    It is consumed in chunks, so a generator of millions of rows needs only one chunk in memory at a time.
    """
    out: dict[str, list[str]] = {}
    for chunk in _chunks(iter(rows), _CHUNK_ROWS):
        for (row_id, _), found in zip(chunk, index._match([text for _, text in chunk]), strict=True):
            if found:
                out[row_id] = sorted(index.test_ids[i] for i in found)
    return out


def _chunks(rows: Iterator[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    while chunk := list(islice(rows, size)):
        yield chunk


def _concat(encoded: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """All token ids in one array, each text followed by an `_UNKNOWN` separator; and each text's start."""
    starts = np.empty(len(encoded), dtype=np.int64)
    joined: list[int] = []
    for row, ids in enumerate(encoded):
        starts[row] = len(joined)
        joined.extend(ids)
        joined.append(_UNKNOWN)
    return np.array(joined, dtype=np.int64), starts


def _window_hashes(flat: np.ndarray, token_values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes and start positions of every k-token window free of unknown tokens and separators.

    A window is valid when it holds no `_UNKNOWN`: that one test also stops windows crossing between texts,
    since each text ends with a separator.
    """
    count = len(flat) - k + 1
    if count <= 0:
        return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int64)
    bad = np.zeros(len(flat) + 1, dtype=np.int64)
    np.cumsum(flat == _UNKNOWN, out=bad[1:])
    pos = np.flatnonzero(bad[k:] == bad[:count])
    if len(pos) == 0:
        return np.empty(0, dtype=np.uint64), pos
    values = token_values[flat]
    h = np.full(len(pos), k, dtype=np.uint64)  # the length seeds the hash, so grams of different k differ
    for i in range(k):
        h *= _MULT  # uint64 arithmetic wraps mod 2^64, which is what the rolling hash wants
        h += values[pos + i]
    return h, pos


def _csr(hashes: np.ndarray, owner_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (hash, owner) pairs as sorted unique keys with CSR offsets into their owners."""
    order = np.lexsort((owner_rows, hashes))
    hashes, owner_rows = hashes[order], owner_rows[order]
    keep = np.ones(len(hashes), dtype=bool)
    keep[1:] = (hashes[1:] != hashes[:-1]) | (owner_rows[1:] != owner_rows[:-1])
    hashes, owner_rows = hashes[keep], owner_rows[keep]
    keys, first = np.unique(hashes, return_index=True)
    offsets = np.append(first, len(hashes)).astype(np.int64)
    return keys, offsets, owner_rows.astype(np.int32)
