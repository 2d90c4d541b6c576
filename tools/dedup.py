"""Duplicate removal for training rows: exact (same normalised text) and near (MinHash + LSH, via datasketch).

Both functions return the indices to drop, in ascending order, keeping the first occurrence of each group, so
`[t for i, t in enumerate(texts) if i not in set(dropped)]` keeps the input order. Text is normalised exactly as
decontamination normalises it (`tools.decontam.tokens`): NFKC, casefold, punctuation and whitespace ignored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from datasketch import MinHash, MinHashLSH

from tools.decontam import normalize, tokens

DEFAULT_SHINGLE = 3  # word 3-grams: one changed word alters only 3 shingles, so short rows still compare well


def exact_duplicates(texts: Sequence[str]) -> list[int]:
    """Indices of texts whose normalised form already appeared earlier (the first one is kept)."""
    seen: set[bytes] = set()
    dropped = []
    for i, text in enumerate(texts):
        # A 16-byte digest instead of the text itself: memory stays flat however long the rows are.
        digest = hashlib.blake2b(normalize(text).encode(), digest_size=16).digest()
        if digest in seen:
            dropped.append(i)
        else:
            seen.add(digest)
    return dropped


def near_duplicates(texts: Sequence[str], threshold: float = 0.85, num_perm: int = 64,
                    shingle: int = DEFAULT_SHINGLE) -> list[int]:
    """Indices of texts whose estimated Jaccard similarity to an earlier *kept* text is >= `threshold`.

    Each text is a set of word `shingle`-grams (a text shorter than that is one shingle: all of it). LSH only
    proposes candidates; a candidate counts when its MinHash estimate reaches the threshold, so LSH's false
    positives are filtered out. Comparing with kept texts only means a chain A~B~C with A and C dissimilar
    drops B and keeps C. Exact duplicates (after normalisation) are near duplicates too.
    """
    if not 0.0 < threshold < 1.0:  # MinHashLSH cannot band for 1.0; use exact_duplicates for identity
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    signatures = MinHash.bulk([_shingles(t, shingle) for t in texts], num_perm=num_perm)
    dropped = []
    for i, sig in enumerate(signatures):
        if any(signatures[j].jaccard(sig) >= threshold for j in lsh.query(sig)):
            dropped.append(i)
        else:
            lsh.insert(i, sig)
    return dropped


def _shingles(text: str, size: int) -> list[bytes]:
    """Word `size`-grams of the normalised text, as bytes for MinHash (a short text is one shingle)."""
    words = tokens(text)
    if len(words) <= size:
        return [" ".join(words).encode()]
    return [" ".join(words[i:i + size]).encode() for i in range(len(words) - size + 1)]
