"""Memorisation check: how much of a generated text is copied from each artist's training lyrics.

The original 4x256 model reached a training loss of 0.06: it recited its training songs. For a generated text
this reports, per artist of a prepared corpus (training split), the longest span that occurs verbatim in that
artist's songs and the share of generated 8-grams that occur there, and flags either past a threshold.

Spans are found with polynomial rolling hashes (mod 2^64, vectorised in numpy) of every window of the corpus,
so a check costs O(corpus x log(text length)) array operations and scales to corpora of many megabytes. Windows
never cross a song boundary; the reported longest span is verified character by character.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .checkpoint import resolve_checkpoint_dir
from .data import Corpus
from .errors import LyricdistError

HASH_BASE = np.uint64(0x9E3779B97F4A7C15)  # odd, so invertible mod 2^64
NGRAM = 8
DEFAULT_MAX_SPAN = 50
DEFAULT_MAX_NGRAM_SHARE = 0.9


def _inverse(base: np.uint64) -> np.uint64:
    """Multiplicative inverse of an odd number mod 2^64 (Newton's iteration)."""
    b = int(base)
    inv = 1
    for _ in range(7):
        inv = (inv * (2 - b * inv)) % 2**64
    return np.uint64(inv)


def _powers(base: np.uint64, n: int) -> np.ndarray:
    out = np.empty(n, dtype=np.uint64)
    if n:
        out[0] = 1
        out[1:] = base
        np.cumprod(out, out=out)  # wraps mod 2^64 by design
    return out


class _Hashes:
    """Prefix sums of ids x base^j, so any window's hash is two lookups and a multiply."""

    def __init__(self, ids: np.ndarray):
        n = len(ids)
        self.prefix = np.zeros(n + 1, dtype=np.uint64)
        np.cumsum((ids.astype(np.uint64) + np.uint64(1)) * _powers(HASH_BASE, n), out=self.prefix[1:])
        self.inv = _powers(_inverse(HASH_BASE), n)

    def windows(self, starts: np.ndarray, length: int) -> np.ndarray:
        return (self.prefix[starts + length] - self.prefix[starts]) * self.inv[starts]


def _contained(needles: np.ndarray, haystack: np.ndarray) -> np.ndarray:
    """needles[i] in haystack, for few needles and a large haystack: O(haystack x log needles), no hashing."""
    if len(needles) == 0 or len(haystack) == 0:
        return np.zeros(len(needles), dtype=bool)
    small = np.sort(needles)
    at = np.minimum(np.searchsorted(small, haystack), len(small) - 1)
    found = np.sort(haystack[small[at] == haystack])
    if len(found) == 0:
        return np.zeros(len(needles), dtype=bool)
    at = np.minimum(np.searchsorted(found, needles), len(found) - 1)
    return found[at] == needles


@dataclass
class ArtistMemorization:
    corpus: str
    artist: str
    longest_span: int
    longest_text: str
    ngram_share: float
    warn: bool


class CorpusIndex:
    """A prepared corpus's training text, indexed per artist for span queries."""

    def __init__(self, corpus_dir: str | Path, split: str = "train"):
        corpus = Corpus(corpus_dir)
        self.path = str(corpus_dir)
        self.vocab = corpus.vocab
        self.artists = corpus.artists or ["(corpus)"]
        self.tokens = np.asarray(corpus.tokens(split), dtype=np.int64)
        starts, artist_ids = corpus.doc_artist_ids(split)
        n = len(self.tokens)
        doc = np.searchsorted(starts, np.arange(n), side="right") - 1 if len(starts) else np.zeros(n, np.int64)
        self.doc = doc
        doc_artist = artist_ids[np.clip(doc, 0, None)] if len(starts) else np.zeros(n, np.int64)
        self.positions = {a: np.flatnonzero(doc_artist == i) for i, a in enumerate(self.artists)}
        self.hashes = _Hashes(self.tokens)
        self.table = self.vocab.lookup_table()

    def encode(self, text: str) -> np.ndarray:
        """Token ids of `text`, -1 where a character is not in the corpus (no window spans it)."""
        if self.vocab.lowercase:
            text = text.lower()
        return self.table[np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)]

    def _artist_windows(self, artist: str, length: int) -> tuple[np.ndarray, np.ndarray]:
        pos = self.positions[artist]
        pos = pos[pos + length <= len(self.tokens)]
        pos = pos[self.doc[pos] == self.doc[pos + length - 1]]
        return pos, self.hashes.windows(pos, length)

    def check(
        self, text: str, max_span: int = DEFAULT_MAX_SPAN, max_ngram_share: float = DEFAULT_MAX_NGRAM_SHARE
    ) -> list[ArtistMemorization]:
        ids = self.encode(text)
        known = ids >= 0
        safe = np.where(known, ids, 0)
        gen = _Hashes(safe)
        unknown_before = np.concatenate([[0], np.cumsum(~known)])

        def gen_windows(length: int) -> tuple[np.ndarray, np.ndarray]:
            starts = np.arange(max(len(ids) - length + 1, 0))
            starts = starts[unknown_before[starts + length] == unknown_before[starts]]
            return starts, gen.windows(starts, length)

        rows = []
        for artist in self.artists:
            n_windows = max(len(ids) - NGRAM + 1, 0)
            share = 0.0
            if n_windows:
                _, h = gen_windows(NGRAM)
                share = float(_contained(h, self._artist_windows(artist, NGRAM)[1]).sum()) / n_windows

            def find(length: int) -> tuple[int, int] | None:
                """(generated start, corpus start) of a verified common span of `length`, if any."""
                g_starts, g_h = gen_windows(length)
                c_starts, c_h = self._artist_windows(artist, length)
                hit = _contained(g_h, c_h)
                for g in np.flatnonzero(hit)[:8]:
                    for c in c_starts[c_h == g_h[g]][:8]:
                        if np.array_equal(ids[g_starts[g] : g_starts[g] + length], self.tokens[c : c + length]):
                            return int(g_starts[g]), int(c)
                return None

            lo, hi, best = 0, len(ids), None  # invariant: a span of lo is present, of hi+1 is not
            while lo < hi:
                mid = (lo + hi + 1) // 2
                found = find(mid)
                if found:
                    lo, best = mid, found
                else:
                    hi = mid - 1
            span_text = self.vocab.decode(self.tokens[best[1] : best[1] + lo]) if best else ""
            rows.append(
                ArtistMemorization(
                    self.path, artist, lo, span_text, round(share, 4), lo >= max_span or share >= max_ngram_share
                )
            )
        return rows


def training_corpus(checkpoint: str | Path) -> str:
    """The corpus a checkpoint was trained on (recorded in its config.json)."""
    path = resolve_checkpoint_dir(checkpoint)
    corpus = json.loads((path / "config.json").read_text(encoding="utf-8")).get("corpus")
    if not corpus or not Path(corpus).is_dir():
        raise LyricdistError(
            f"checkpoint {path} records no reachable training corpus ({corpus!r}); pass --corpus DIR for the check"
        )
    return corpus


def check_texts(
    texts: list[str],
    corpora: list[str],
    max_span: int = DEFAULT_MAX_SPAN,
    max_ngram_share: float = DEFAULT_MAX_NGRAM_SHARE,
) -> list[list[dict]]:
    """For each text, one report row per (corpus, artist); prints a warning line for each row past a threshold."""
    indexes = [CorpusIndex(c) for c in dict.fromkeys(corpora)]
    reports = []
    for k, text in enumerate(texts):
        rows = [asdict(r) for index in indexes for r in index.check(text, max_span, max_ngram_share)]
        for r in rows:
            if r["warn"]:
                which = f"text {k + 1}: " if len(texts) > 1 else ""
                print(
                    f"warning: {which}possible memorisation of {r['artist']}: {r['longest_span']}-character span "
                    f"copied, {r['ngram_share']:.0%} of {NGRAM}-grams from the training text "
                    f"(thresholds {max_span} chars, {max_ngram_share:.0%})",
                    file=sys.stderr,
                )
        reports.append(rows)
    return reports


def format_report(rows: list[dict]) -> str:
    lines = [f"memorisation (longest copied span, share of {NGRAM}-grams in the artist's training text):"]
    for r in rows:
        flag = "  <-- memorised?" if r["warn"] else ""
        lines.append(f"  {r['artist']}: {r['longest_span']} chars, {r['ngram_share']:.1%}{flag}")
    return "\n".join(lines)
