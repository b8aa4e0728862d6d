"""Memorisation check: how much of a generated text is copied from each artist's training lyrics.

The original 4x256 model reached a training loss of 0.06: it recited its training songs. For a generated text
this reports, per artist of a prepared corpus (training split):

* in words (the measure that decides): the share of the text's word 5-grams found in that artist's training
  songs and the longest run of words copied verbatim, next to the same figures for the artist's real held-out
  songs (the corpus's validation split). Real unseen songs share refrains and stock phrases with the training
  text (on the giitaayan lyricists more than half of a held-out song's character 8-grams occur in training), so
  "copied" only means something against that reference: the warning fires when the text copies clearly more than
  new real songs by the artist do: its 5-gram share above both the 90th percentile of the held-out songs' shares
  and their pooled share + `WORD_MARGIN`, or its longest copied word span more than `WORD_NGRAM` words past the
  held-out songs' 90th percentile.
* the span rule of generation: a text whose longest copied word span is longer than the artist's real held-out
  songs' 90th percentile is flagged (`past_heldout_p90`) whether or not it warns: `sample` and `collab` say so next
  to the text, and run the check by default when they sample with guidance (see `song_memorization`).
* in characters (kept for comparison): the longest copied span and the share of 8-grams. A corpus without held-out
  songs of the artist falls back to character thresholds (50 characters, 90% of 8-grams); explicit
  `max_span` / `max_ngram_share` always apply as well.

Spans are found with polynomial rolling hashes (mod 2^64, vectorised in numpy) of every window of the corpus
(character or word ids), so a check costs O(corpus x log(text length)) array operations and scales to corpora of
many megabytes. Windows never cross a song boundary; the reported longest span is verified token by token.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from jsonargparse.typing import ClosedUnitInterval, PositiveInt

from .checkpoint import resolve_checkpoint_dir
from .data import Corpus
from .errors import LyricdistError

HASH_BASE = np.uint64(0x9E3779B97F4A7C15)  # odd, so invertible mod 2^64
NGRAM = 8
WORD_NGRAM = 5
DEFAULT_MAX_SPAN = 50  # characters, used when the artist has no held-out songs to compare with
DEFAULT_MAX_NGRAM_SHARE = 0.9
HELDOUT_QUANTILE = 0.9
WORD_MARGIN = 0.05  # a share this far above the held-out pooled share, and above its 90th percentile, is "clearly more"
_WORDS = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


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


def words(text: str) -> list[str]:
    return _WORDS.findall(text.lower())


class _SpanIndex:
    """Token ids of a training text with song boundaries and an artist per position; shares and longest spans."""

    def __init__(self, tokens: np.ndarray, doc: np.ndarray, doc_artist: np.ndarray, n_artists: int):
        self.tokens, self.doc = tokens, doc
        self.positions = [np.flatnonzero(doc_artist == a) for a in range(n_artists)]
        self.hashes = _Hashes(tokens)

    def _windows(self, artist: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        pos = self.positions[artist]
        pos = pos[pos + length <= len(self.tokens)]
        pos = pos[self.doc[pos] == self.doc[pos + length - 1]]
        return pos, self.hashes.windows(pos, length)

    def compare(self, ids: np.ndarray, artist: int, ngram: int) -> tuple[float, int, int]:
        """(share of the text's n-grams in the artist's text, longest common span, its start in the corpus).

        `ids` < 0 are tokens the corpus lacks: no window spans them."""
        known = ids >= 0
        gen = _Hashes(np.where(known, ids, 0))
        unknown_before = np.concatenate([[0], np.cumsum(~known)])

        def gen_windows(length: int) -> tuple[np.ndarray, np.ndarray]:
            starts = np.arange(max(len(ids) - length + 1, 0))
            starts = starts[unknown_before[starts + length] == unknown_before[starts]]
            return starts, gen.windows(starts, length)

        n_windows = max(len(ids) - ngram + 1, 0)
        share = 0.0
        if n_windows:
            share = float(_contained(gen_windows(ngram)[1], self._windows(artist, ngram)[1]).sum()) / n_windows

        def find(length: int) -> int | None:
            """Corpus start of a verified common span of `length`, if any."""
            g_starts, g_h = gen_windows(length)
            c_starts, c_h = self._windows(artist, length)
            for g in np.flatnonzero(_contained(g_h, c_h))[:8]:
                for c in c_starts[c_h == g_h[g]][:8]:
                    if np.array_equal(ids[g_starts[g] : g_starts[g] + length], self.tokens[c : c + length]):
                        return int(c)
            return None

        lo, hi, best = 0, len(ids), -1  # invariant: a span of lo is present, of hi+1 is not
        while lo < hi:
            mid = (lo + hi + 1) // 2
            found = find(mid)
            if found is not None:
                lo, best = mid, found
            else:
                hi = mid - 1
        return share, lo, best


@dataclass
class ArtistMemorization:
    corpus: str
    artist: str
    longest_span: int  # characters
    longest_text: str
    ngram_share: float  # of character 8-grams
    warn: bool
    word_ngram_share: float = 0.0  # of word 5-grams
    longest_word_span: int = 0
    longest_words: str = ""
    heldout_songs: int = 0  # the artist's real held-out songs the figures below come from (0: none)
    heldout_word_ngram_share: float | None = None  # pooled over those songs
    heldout_word_ngram_share_p90: float | None = None  # per song, 90th percentile
    heldout_longest_word_span_p90: float | None = None
    heldout_longest_word_span_max: int | None = None
    past_heldout_p90: bool = False  # longest_word_span > heldout_longest_word_span_p90


class CorpusIndex:
    """A prepared corpus's training text, indexed per artist in characters and in words for span queries."""

    def __init__(self, corpus_dir: str | Path, split: str = "train"):
        corpus = Corpus(corpus_dir)
        self.corpus = corpus
        self.path = str(corpus_dir)
        self.vocab = corpus.vocab
        self.artists = corpus.artists or ["(corpus)"]
        self.tokens = np.asarray(corpus.tokens(split), dtype=np.int64)
        starts, artist_ids = corpus.doc_artist_ids(split)
        n = len(self.tokens)
        doc = np.searchsorted(starts, np.arange(n), side="right") - 1 if len(starts) else np.zeros(n, np.int64)
        doc_artist = artist_ids[np.clip(doc, 0, None)] if len(starts) else np.zeros(n, np.int64)
        self.chars = _SpanIndex(self.tokens, doc, doc_artist, len(self.artists))
        self.table = self.vocab.lookup_table()
        # Word level: every training song's words, ids by first appearance.
        self.word_ids: dict[str, int] = {}
        self.word_list: list[str] = []
        w_tokens, w_doc, w_artist = [], [], []
        for k, (text, artist) in enumerate(self._songs(self.tokens, starts, artist_ids)):
            ids = [self.word_ids.setdefault(w, len(self.word_ids)) for w in words(text)]
            w_tokens += ids
            w_doc += [k] * len(ids)
            w_artist += [artist] * len(ids)
        self.word_list = list(self.word_ids)
        self.words = _SpanIndex(np.asarray(w_tokens, np.int64), np.asarray(w_doc, np.int64),
                                np.asarray(w_artist, np.int64), len(self.artists))
        self._heldout: dict[int, dict] = {}

    def _songs(self, tokens: np.ndarray, starts: np.ndarray, artist_ids: np.ndarray):
        if not len(starts):
            yield self.vocab.decode(tokens), 0
            return
        ends = np.append(starts[1:], len(tokens))
        for s, e, a in zip(starts, ends, artist_ids):
            yield self.vocab.decode(tokens[s:e]), int(a)

    def encode(self, text: str) -> np.ndarray:
        """Token ids of `text`, -1 where a character is not in the corpus (no window spans it)."""
        if self.vocab.lowercase:
            text = text.lower()
        return self.table[np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)]

    def encode_words(self, text: str) -> np.ndarray:
        return np.asarray([self.word_ids.get(w, -1) for w in words(text)], dtype=np.int64)

    def heldout(self, artist: int) -> dict:
        """The word figures of the artist's real held-out (validation) songs against its training songs."""
        if artist not in self._heldout:
            shares, spans, hits, windows = [], [], 0, 0
            try:
                val = np.asarray(self.corpus.tokens("val"), dtype=np.int64)
                starts, ids = self.corpus.doc_artist_ids("val")
            except LyricdistError:
                val, starts, ids = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
            for text, a in (self._songs(val, starts, ids) if len(starts) else ()):
                if a != artist:
                    continue
                w = self.encode_words(text)
                share, span, _ = self.words.compare(w, artist, WORD_NGRAM)
                n = max(len(w) - WORD_NGRAM + 1, 0)
                if n:
                    shares.append(share)
                    spans.append(span)
                    hits += share * n
                    windows += n
            self._heldout[artist] = {
                "heldout_songs": len(shares),
                "heldout_word_ngram_share": round(hits / windows, 4) if windows else None,
                "heldout_word_ngram_share_p90": round(float(np.quantile(shares, HELDOUT_QUANTILE)), 4)
                if shares else None,
                "heldout_longest_word_span_p90": round(float(np.quantile(spans, HELDOUT_QUANTILE)), 1)
                if spans else None,
                "heldout_longest_word_span_max": int(max(spans)) if spans else None,
            }
        return self._heldout[artist]

    def check(
        self, text: str, max_span: int | None = None, max_ngram_share: float | None = None
    ) -> list[ArtistMemorization]:
        ids = self.encode(text)
        w = self.encode_words(text)
        rows = []
        for a, artist in enumerate(self.artists):
            share, span, at = self.chars.compare(ids, a, NGRAM)
            span_text = self.vocab.decode(self.tokens[at : at + span]) if span else ""
            w_share, w_span, w_at = self.words.compare(w, a, WORD_NGRAM)
            w_text = " ".join(self.word_list[i] for i in self.words.tokens[w_at : w_at + w_span]) if w_span else ""
            ref = self.heldout(a)
            if ref["heldout_songs"]:
                warn = (
                    w_share > max(ref["heldout_word_ngram_share_p90"], ref["heldout_word_ngram_share"] + WORD_MARGIN)
                    or w_span > ref["heldout_longest_word_span_p90"] + WORD_NGRAM
                )
            else:  # nothing to compare with: the character thresholds
                warn = span >= (max_span or DEFAULT_MAX_SPAN) or share >= (max_ngram_share or DEFAULT_MAX_NGRAM_SHARE)
            warn = warn or (max_span is not None and span >= max_span)
            warn = warn or (max_ngram_share is not None and share >= max_ngram_share)
            p90 = ref["heldout_longest_word_span_p90"]
            rows.append(ArtistMemorization(
                self.path, artist, span, span_text, round(share, 4), bool(warn),
                round(w_share, 4), w_span, w_text, **ref, past_heldout_p90=p90 is not None and w_span > p90,
            ))
        return rows


def check_options(
    check_memorization: bool | None = None,
    corpus: str | list[str] | None = None,
    max_span: PositiveInt | None = None,
    max_ngram_share: ClosedUnitInterval | None = None,
) -> None:
    """The memorisation-check options of `sample` and `collab` (their command lines add them; see check_texts).

    Args:
        check_memorization: report text copied from training lyrics (default: on when sampling with guidance,
            where its training corpus is reachable; the figures go into the output and its JSON)
        corpus: corpora for the check (default: the model's)
        max_span: also warn at a copied span of this many characters (default: compare with the artist's held-out
            songs in words; 50 where it has none)
        max_ngram_share: also warn at this share of character 8-grams (default: as --max_span; 0.9)
    """


def training_corpus(checkpoint: str | Path) -> str:
    """The corpus a checkpoint was trained on: the one its config.json records, or, for a wandb download whose
    recorded path is not on this machine, the corpus artifact its model artifact names."""
    from .refs import training_corpus_of_download

    path = resolve_checkpoint_dir(checkpoint)
    corpus = json.loads((path / "config.json").read_text(encoding="utf-8")).get("corpus")
    if corpus and Path(corpus).is_dir():
        return corpus
    fetched = training_corpus_of_download(path)
    if fetched is not None:
        return str(fetched)
    raise LyricdistError(
        f"checkpoint {path} records no reachable training corpus ({corpus!r}) and names no wandb corpus artifact; "
        f"pass --corpus DIR for the check"
    )


_INDEXES: OrderedDict[tuple, CorpusIndex] = OrderedDict()
_INDEXES_KEPT = 4  # an app with two checkpoints of different corpora keeps both; memory stays bounded
_INDEXES_LOCK = threading.Lock()


def corpus_index(corpus: str | Path) -> CorpusIndex:
    """A CorpusIndex of `corpus`, kept for the process while the corpus's files are unchanged (an app or a benchmark
    checks many texts against the same few corpora; the last `_INDEXES_KEPT` are kept). Thread-safe."""
    meta = Path(corpus) / "meta.json"
    key = (str(Path(corpus).resolve()), meta.stat().st_mtime_ns if meta.exists() else None)
    with _INDEXES_LOCK:
        if key in _INDEXES:
            _INDEXES.move_to_end(key)
            return _INDEXES[key]
    index = CorpusIndex(corpus)  # built outside the lock: a slow build does not block other corpora
    with _INDEXES_LOCK:
        _INDEXES[key] = index
        while len(_INDEXES) > _INDEXES_KEPT:
            _INDEXES.popitem(last=False)
    return index


def check_texts(
    texts: list[str],
    corpora: list[str],
    max_span: int | None = None,
    max_ngram_share: float | None = None,
) -> list[list[dict]]:
    """For each text, one report row per (corpus, artist); prints a warning line for each row past a threshold."""
    indexes = [corpus_index(c) for c in dict.fromkeys(corpora)]
    return _check(indexes, texts, max_span, max_ngram_share)


def _check(indexes: list[CorpusIndex], texts: list[str], max_span: int | None, max_ngram_share: float | None,
           quiet: bool = False) -> list[list[dict]]:
    reports = []
    for k, text in enumerate(texts):
        rows = [asdict(r) for index in indexes for r in index.check(text, max_span, max_ngram_share)]
        for r in rows:
            if r["warn"] and not quiet:
                which = f"text {k + 1}: " if len(texts) > 1 else ""
                print(f"warning: {which}possible memorisation of {r['artist']}: {_describe(r, max_span, max_ngram_share)}",
                      file=sys.stderr)
        reports.append(rows)
    return reports


def song_memorization(
    segments: list[dict], corpora: list[str], max_span: int | None = None, max_ngram_share: float | None = None,
    quiet: bool = False,
) -> dict:
    """The memorisation figures of a generated song ({"author", "text"} segments; "primetext" ones are not
    generated): "rows", the whole generated text against every artist of the corpora (check_texts' rows, warnings
    printed); "segments", each generated segment against its author's training songs (rows of an artist of that
    name; all rows when no artist has it), with `past_heldout_p90` when it copies a word span longer than the
    author's real held-out songs' 90th percentile; "past_heldout_p90", the indexes of those segments. `quiet`: print
    no warnings (the app shows them itself)."""
    indexes = [corpus_index(c) for c in dict.fromkeys(corpora)]
    generated = "".join(s["text"] for s in segments if s["author"] != "primetext")
    report = {"rows": _check(indexes, [generated], max_span, max_ngram_share, quiet)[0], "segments": [],
              "past_heldout_p90": []}
    for k, seg in enumerate(segments):
        if seg["author"] == "primetext":
            continue
        rows = _check(indexes, [seg["text"]], max_span, max_ngram_share, quiet=True)[0]
        names = {n.strip().casefold() for n in seg["author"].split(" + ")}
        mine = [r for r in rows if r["artist"].casefold() in names] or rows
        worst = max(mine, key=lambda r: (r["past_heldout_p90"], r["longest_word_span"]))
        report["segments"].append({"segment": k, "author": seg["author"], **{key: worst[key] for key in (
            "artist", "word_ngram_share", "longest_word_span", "longest_words", "heldout_longest_word_span_p90",
            "past_heldout_p90")}})
        if worst["past_heldout_p90"]:
            report["past_heldout_p90"].append(k)
    return report


def flagged_segments(report: dict | None) -> dict[int, dict]:
    """The parts of a song_memorization report that copy past their author's held-out p90, by segment index ({} for
    no report or a check that did not run)."""
    return {r["segment"]: r for r in (report or {}).get("segments", []) if r["past_heldout_p90"]}


def span_notice(row: dict) -> str:
    """One line on a text that copies a word span longer than the artist's real held-out songs' 90th percentile."""
    return (f"copies a {row['longest_word_span']}-word span of {row['artist']}'s training songs "
            f"(\"{row['longest_words']}\"), longer than {row['heldout_longest_word_span_p90']:g} words, the 90th "
            f"percentile of the longest copied spans of {row['artist']}'s real held-out songs")


def _describe(r: dict, max_span: int | None = None, max_ngram_share: float | None = None) -> str:
    text = (f"{r['word_ngram_share']:.0%} of word {WORD_NGRAM}-grams and a {r['longest_word_span']}-word span copied "
            f"from the training text")
    if r["heldout_songs"]:
        text += (f" (the artist's {r['heldout_songs']} real held-out songs: {r['heldout_word_ngram_share']:.0%} pooled, "
                 f"90th percentile {r['heldout_word_ngram_share_p90']:.0%}, spans up to "
                 f"{r['heldout_longest_word_span_p90']:g} words at the 90th percentile)")
    text += f"; {r['longest_span']} characters, {r['ngram_share']:.0%} of {NGRAM}-grams"
    if max_span is not None or max_ngram_share is not None or not r["heldout_songs"]:
        text += (f" (thresholds {max_span if max_span is not None else DEFAULT_MAX_SPAN} chars, "
                 f"{max_ngram_share if max_ngram_share is not None else DEFAULT_MAX_NGRAM_SHARE:.0%})")
    return text


def format_report(rows: list[dict]) -> str:
    lines = [f"memorisation (word {WORD_NGRAM}-grams / longest copied word span in the artist's training text, "
             f"against its real held-out songs; characters for comparison):"]
    for r in rows:
        flag = "  <-- memorised?" if r["warn"] else ("  <-- span past the held-out p90" if r["past_heldout_p90"] else "")
        ref = (f" | held-out songs: {r['heldout_word_ngram_share']:.1%}, p90 span {r['heldout_longest_word_span_p90']:g}"
               if r["heldout_songs"] else " | no held-out songs")
        lines.append(f"  {r['artist']}: {r['word_ngram_share']:.1%}, {r['longest_word_span']} words{ref} | "
                     f"{r['longest_span']} chars, {r['ngram_share']:.1%} of {NGRAM}-grams{flag}")
    return "\n".join(lines)
