"""Training pairs for the siamese model, split by song so that no song is seen on both sides of train/test.

(a) Last.fm (the Million Song Dataset companion: one JSON per track with track_id, artist, title and
    similars = [[track_id, score], ...]) joined to lyrics by normalised artist and title; the score is the target.
(b) Lyrics alone: a song and another song by the same artist are similar (1), a song and one by another artist
    dissimilar (0), in equal numbers.
"""

from __future__ import annotations

import json
import random
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LyricdistError
from ..sources import Song, open_source
from .config import SimilarityDataConfig

Pair = tuple[int, int, float]  # song index a, song index b, target similarity in [0, 1]


@dataclass
class PairSet:
    songs: list[Song]
    train: list[Pair]
    test: list[Pair]
    train_songs: list[int]
    test_songs: list[int]
    info: dict = field(default_factory=dict)
    val: list[Pair] = field(default_factory=list)  # pairs of songs set aside from training to pick the best checkpoint
    val_songs: list[int] = field(default_factory=list)


def normalise(text: str) -> str:
    """Fold the spelling differences between catalogues: case, accents, '(feat. X)', '[Live]', '&', punctuation."""
    t = unicodedata.normalize("NFKD", text).casefold()
    t = "".join(c for c in t if not unicodedata.combining(c))
    t = re.sub(r"[(\[{].*?[)\]}]", " ", t)
    t = re.sub(r"\s(feat\.?|ft\.?|featuring)\s.*$", " ", t)
    t = re.sub(r"\s-\s.*$", " ", t)  # "Song - Remastered 2009"
    t = re.sub(r"[^\w\s]", "", t.replace("&", " and "))
    t = " ".join(t.split())
    return t.removeprefix("the ")


def song_key(artist: str, title: str) -> tuple[str, str]:
    return normalise(artist), normalise(title)


def artist_names(songs: list[Song]) -> list[str]:
    """One display name per artist (its first spelling), sorted by normalised name."""
    names: dict[str, str] = {}
    for s in songs:
        names.setdefault(normalise(s.artist), s.artist)
    return [names[k] for k in sorted(names)]


def load_songs(specs: list[str]) -> list[Song]:
    """Songs with an artist from `lyricdist prepare` sources; a song listed twice (same artist and title) once."""
    songs: list[Song] = []
    seen: set[tuple[str, str]] = set()
    for spec in specs:
        source = open_source(spec)
        if getattr(source, "kind", None) != "songs":
            raise LyricdistError(
                f"source {spec!r} is one continuous text; similarity needs songs with artists (e.g. 'demo' or a "
                f"`lyricdist scrape` dataset)"
            )
        for song in source.songs():
            key = song_key(song.artist, song.title or song.text[:80])
            if song.artist and song.text.strip() and key not in seen:
                seen.add(key)
                songs.append(song)
    if not songs:
        raise LyricdistError(f"no songs with an artist in {', '.join(specs)}; check the sources")
    return songs


def split_by_song(artists: list[str], test_fraction: float, rng: random.Random) -> tuple[list[int], list[int]]:
    """Indices of train and test songs, drawn per artist so both sides see every artist with 2+ songs."""
    by_artist: dict[str, list[int]] = defaultdict(list)
    for i, a in enumerate(artists):
        by_artist[a].append(i)
    train, test = [], []
    for a in sorted(by_artist):
        idx = by_artist[a][:]
        rng.shuffle(idx)
        n_test = round(len(idx) * test_fraction) if len(idx) >= 4 else (1 if len(idx) >= 2 else 0)
        test += idx[:n_test]
        train += idx[n_test:]
    return sorted(train), sorted(test)


def _artist_pairs(side: list[int], artists: list[str], per_song: int, rng: random.Random, name: str) -> list[Pair]:
    by_artist: dict[str, list[int]] = defaultdict(list)
    for i in side:
        by_artist[artists[i]].append(i)
    names = sorted(by_artist)
    if len(names) < 2 or all(len(v) < 2 for v in by_artist.values()):
        raise LyricdistError(
            f"the {name} split needs two artists and an artist with two songs (it has {len(names)} artists, "
            f"{len(side)} songs); add songs or change data.test_fraction"
        )
    pairs: list[Pair] = []
    for i in side:
        same = [j for j in by_artist[artists[i]] if j != i]
        if not same:
            continue  # a lone song of its artist here cannot have a similar partner; skip to stay balanced
        others = [a for a in names if a != artists[i]]
        for _ in range(per_song):
            pairs.append((i, rng.choice(same), 1.0))
            pairs.append((i, rng.choice(by_artist[rng.choice(others)]), 0.0))
    rng.shuffle(pairs)
    return pairs


def lyrics_pairs(songs: list[Song], cfg: SimilarityDataConfig, split: tuple[list[int], list[int]] | None = None
                 ) -> PairSet:
    """Same/different-artist pairs within each side of a split by song (drawn here, or `split` = (train, test)
    song indices, e.g. a prepared corpus's own split). `cfg.val_fraction` of the training songs become the
    validation side, which picks the best checkpoint."""
    rng = random.Random(cfg.seed)
    artists = [normalise(s.artist) for s in songs]
    train, test = split if split is not None else split_by_song(artists, cfg.test_fraction, rng)
    val: list[int] = []
    val_pairs: list[Pair] = []
    if cfg.val_fraction > 0:
        rest, held = split_by_song([artists[i] for i in train], cfg.val_fraction, rng)
        try:
            val_pairs = _artist_pairs([train[k] for k in held], artists, cfg.pairs_per_song, rng, "validation")
            train, val = [train[k] for k in rest], [train[k] for k in held]
        except LyricdistError:
            val_pairs = []  # too few songs to set any aside: train on all, keep the last checkpoint
    return PairSet(
        songs,
        _artist_pairs(train, artists, cfg.pairs_per_song, rng, "train"),
        _artist_pairs(test, artists, cfg.pairs_per_song, rng, "test"),
        sorted(train),
        sorted(test),
        {"pairs_from": "artists", "songs": len(songs), "artists": len(set(artists)), "val_songs": len(val)},
        val_pairs,
        sorted(val),
    )


@dataclass
class LastfmTrack:
    track_id: str
    artist: str
    title: str
    similars: list[tuple[str, float]]


def read_lastfm(path: str | Path) -> list[LastfmTrack]:
    """All tracks of a Last.fm dataset directory (lastfm_train/A/A/A/TRAAAAW128F429D538.json, ...)."""
    root = Path(path)
    files = sorted(root.rglob("*.json")) if root.is_dir() else [root] if root.is_file() else []
    if not files:
        raise LyricdistError(f"no Last.fm JSON files under {str(root)!r}; give the unpacked lastfm_train/ directory")
    tracks = []
    for f in files:
        try:
            obj = json.loads(f.read_text(encoding="utf-8"))
            similars = [(str(tid), float(score)) for tid, score in obj.get("similars", [])]
            tracks.append(LastfmTrack(str(obj["track_id"]), str(obj["artist"]), str(obj["title"]), similars))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
            raise LyricdistError(
                f"{f} is not a Last.fm track file ({type(e).__name__}: {e}); expected track_id, artist, title, similars"
            ) from None
    return tracks


def lastfm_pairs(songs: list[Song], tracks: list[LastfmTrack], cfg: SimilarityDataConfig) -> PairSet:
    """Listed similar pairs (target = Last.fm score) among tracks that have lyrics, plus as many random unlisted
    pairs as negatives (target 0) when cfg.lastfm_negatives; a pair whose songs fall on different sides is dropped."""
    index = {song_key(s.artist, s.title): i for i, s in enumerate(songs)}
    song_of = {}
    for t in tracks:
        i = index.get(song_key(t.artist, t.title))
        if i is not None:
            song_of[t.track_id] = i
    join_rate = len(song_of) / len(tracks)
    if len(song_of) < 4:
        raise LyricdistError(
            f"only {len(song_of)} of {len(tracks)} Last.fm tracks have lyrics in the sources (join rate "
            f"{join_rate:.1%}); give lyrics of the same songs (matched on normalised artist and title)"
        )
    rng = random.Random(cfg.seed)
    matched = sorted(set(song_of.values()))
    artists = [normalise(songs[i].artist) for i in matched]
    tr, te = split_by_song(artists, cfg.test_fraction, rng)
    train_songs, test_songs = sorted(matched[k] for k in tr), sorted(matched[k] for k in te)
    side = {i: 0 for i in train_songs} | {i: 1 for i in test_songs}

    listed: dict[tuple[int, int], float] = {}
    for t in tracks:
        a = song_of.get(t.track_id)
        for sid, score in t.similars:
            b = song_of.get(sid)
            if a is not None and b is not None and a != b:
                key = (min(a, b), max(a, b))
                listed[key] = max(score, listed.get(key, 0.0))
    split: list[list[Pair]] = [[], []]
    dropped = 0
    for (a, b), score in sorted(listed.items()):
        if side[a] == side[b]:
            split[side[a]].append((a, b, min(max(score, 0.0), 1.0)))
        else:
            dropped += 1
    if cfg.lastfm_negatives:
        taken = set(listed)
        for s, members in enumerate((train_songs, test_songs)):
            wanted, tries = len(split[s]), 0
            while wanted and len(members) > 1 and tries < 20 * len(split[s]) + 100:  # a small side may run out
                tries += 1
                a, b = sorted(rng.sample(members, 2))
                if (a, b) not in taken:
                    taken.add((a, b))
                    split[s].append((a, b, 0.0))
                    wanted -= 1
    for s, name in enumerate(("train", "test")):
        if not split[s]:
            raise LyricdistError(
                f"no Last.fm pairs in the {name} split ({len(listed)} listed pairs have lyrics for both songs); "
                f"add lyrics for more of the Last.fm tracks or change data.test_fraction"
            )
        rng.shuffle(split[s])
    info = {
        "pairs_from": "lastfm",
        "lastfm_tracks": len(tracks),
        "matched_tracks": len(song_of),
        "join_rate": join_rate,
        "listed_pairs": len(listed),
        "cross_split_pairs_dropped": dropped,
    }
    return PairSet(songs, split[0], split[1], train_songs, test_songs, info)


def build_pairs(cfg: SimilarityDataConfig) -> PairSet:
    songs = load_songs(cfg.sources)
    if cfg.lastfm:
        return lastfm_pairs(songs, read_lastfm(cfg.lastfm), cfg)
    return lyrics_pairs(songs, cfg)
