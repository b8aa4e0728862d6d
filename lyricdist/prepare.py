"""prepare: corpora -> character vocabulary + memory-mapped train/validation token arrays.

Layout of a corpus directory (all written atomically, as one directory swap):
  vocab.json              characters, in id order, and whether text was lowercased
  train.bin / val.bin     token ids, raw, in the smallest unsigned dtype that fits the vocabulary
  train_docs.npy / val_docs.npy
                          int64 [n_docs, 2]: start offset of each song (document) and its artist id;
                          training resets the recurrent state at each start
  meta.json               dtype, sizes, artists, sources, split settings, statistics
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from jsonargparse.typing import PositiveInt

from .options import FractionBelowOne, check_types
from .corpus_format import CORPUS_FORMAT, CORPUS_VERSION
from .errors import LyricdistError
from .fileio import atomic_dir, atomic_write_json
from .sources import Song, open_source
from .vocab import MAX_CODEPOINT, Vocab, codepoints


PROGRESS_DELAY_S = 2.0  # a pass shows a progress bar (stderr) only once it has taken this long: large inputs


def _progress(desc: str, total: int | None, quiet: bool):
    """A character-count progress bar on stderr that appears only for a pass that takes a while (tqdm's delay)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="char", unit_scale=True, delay=PROGRESS_DELAY_S, disable=quiet,
                leave=False, mininterval=1.0)


@dataclass
class _TextDoc:
    source: object
    artist: str
    n_chars: int = 0


def _split_songs(songs: list[Song], artist_ids: list[int], val_fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of validation songs: whole songs, stratified by artist, deterministic by seed."""
    is_val = np.zeros(len(songs), dtype=bool)
    if val_fraction <= 0:
        return is_val
    rng = np.random.default_rng(seed)
    ids = np.asarray(artist_ids)
    for a in sorted(set(artist_ids)):
        members = np.flatnonzero(ids == a)
        if len(members) < 2:
            continue
        k = int(round(len(members) * val_fraction))
        k = min(max(k, 1), len(members) - 1)
        is_val[rng.permutation(members)[:k]] = True
    return is_val


def _credits(song: Song) -> list[str]:
    return list(song.meta.get("artists") or [song.artist]) if isinstance(song.meta, dict) else [song.artist]


def _select_artists(songs: list[Song], artists: Sequence[str] | None, exclude: Sequence[str] | None) -> list[Song]:
    if artists:
        wanted = {a.casefold(): a for a in artists}
        found = {c.casefold() for s in songs for c in _credits(s)} & set(wanted)
        if set(wanted) - found:
            missing = sorted(wanted[a] for a in set(wanted) - found)
            raise LyricdistError(f"artists not found in the sources: {missing}; check the --artists spelling")
        kept = []
        for s in songs:
            match = next((c for c in _credits(s) if c.casefold() in wanted), None)
            if match is not None:
                kept.append(Song(text=s.text, artist=match, title=s.title, meta=s.meta))
        songs = kept
    if exclude:
        dropped = {a.casefold() for a in exclude}
        songs = [s for s in songs if s.artist.casefold() not in dropped]
        if not songs:
            raise LyricdistError(f"--exclude_artists {list(exclude)} leaves no songs; exclude fewer artists")
    return songs


def _cap_songs(songs: list[Song], cap: int, seed: int) -> list[Song]:
    rng = np.random.default_rng(seed + 2)
    by_artist: dict[str, list[int]] = {}
    for i, s in enumerate(songs):
        by_artist.setdefault(s.artist, []).append(i)
    keep = sorted(i for members in by_artist.values() for i in (members if len(members) <= cap else
                  rng.choice(members, cap, replace=False).tolist()))
    return [songs[i] for i in keep]


def _artist_stats(songs: list[Song], song_artists: list[int], is_val: np.ndarray, names: list[str]) -> dict:
    """Per artist: songs on each side of the split, characters, and songs that credit someone else too."""
    stats = {n: {"songs": 0, "train_songs": 0, "val_songs": 0, "chars": 0, "shared_credit": 0} for n in names}
    for song, a, val in zip(songs, song_artists, is_val):
        row = stats[names[a]]
        row["songs"] += 1
        row["val_songs" if val else "train_songs"] += 1
        row["chars"] += len(song.text)
        row["shared_credit"] += len(_credits(song)) > 1
    return stats


def _check_out_dir(out: Path, overwrite: bool) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise LyricdistError(f"--out {out} is a file; give a directory path")
    meta = out / "meta.json"
    is_corpus = meta.is_file() and CORPUS_FORMAT in meta.read_text(encoding="utf-8", errors="replace")
    if is_corpus and not overwrite:
        raise LyricdistError(f"corpus directory {out} already exists; pass --overwrite true to replace it")
    if not is_corpus and any(out.iterdir()):
        raise LyricdistError(f"--out {out} is a non-empty directory that is not a lyricdist corpus; choose another path")


def prepare(
    sources: Sequence[str],
    out: str,
    val_fraction: FractionBelowOne = 0.1,
    seed: int = 1337,
    lowercase: bool | None = None,
    artists: Sequence[str] | None = None,
    exclude_artists: Sequence[str] | None = None,
    max_songs_per_artist: PositiveInt | None = None,
    overwrite: bool = False,
    source_options: dict | None = None,
    quiet: bool = False,
) -> dict:
    """Build a training corpus from SOURCES; returns the statistics also written to meta.json.

    `artists` keeps only songs by these artists (case-insensitive); a song crediting several people
    (`Song.meta["artists"]`, e.g. giitaayan with an artist field) is kept if any of them is wanted, and goes to the
    first wanted one. `exclude_artists` then drops songs by these artists (e.g. `unknown`), and
    `max_songs_per_artist` keeps a random (by `seed`) subset of that many songs of each artist, in source order.

    Args:
        sources: text files, 'demo', a scraped dataset dir, giitaayan files/archives,
            hf:USER/DATASET[@REVISION][:SPLIT], .parquet files, or a public corpus by name, downloaded into the
            cache: tinyshakespeare, giitaayan
        out: corpus directory to write
        val_fraction: share held out for validation (whole songs), in [0, 1)
        seed: seed of the song split
        lowercase: lowercase the text (default: on for lyrics)
        artists: keep only these artists: --artists+ Gulzar, or --artists '[Anand Bakshi, Gulzar]'
        exclude_artists: leave out these artists, e.g. unknown
        max_songs_per_artist: keep a random subset of each artist
        overwrite: replace an existing corpus directory
        source_options: options of the sources (see lyricdist.sources.source_options)
        quiet: print nothing
    """
    check_types(prepare, locals())
    if not sources:
        raise LyricdistError("no SOURCE given; e.g. `lyricdist prepare demo --out corpus/demo`")
    out_dir = Path(out)
    _check_out_dir(out_dir, overwrite)
    t0 = time.time()
    opened = [open_source(s, **(source_options or {})) for s in sources]
    if lowercase is None:
        lowercase = any(src.default_lowercase for src in opened)

    # Pass 1: gather songs (small) and scan texts (streamed) for the character set and sizes.
    seen = np.zeros(MAX_CODEPOINT, dtype=bool)
    songs: list[Song] = []
    texts: list[_TextDoc] = []
    skipped_empty = 0
    source_stats = []
    reading = _progress("reading", None, quiet)
    for src in opened:
        if src.kind == "songs":
            n_before = len(songs)
            for song in src.songs():
                text = song.text.lower() if lowercase else song.text
                reading.update(len(text))
                if not text.strip():
                    skipped_empty += 1
                    continue
                songs.append(Song(text=text, artist=song.artist or src.name, title=song.title, meta=song.meta))
            entry = {"source": src.name, "songs": len(songs) - n_before}
            if hasattr(src, "stats"):  # e.g. giitaayan: files parsed, skipped by reason, characters, vocabulary
                entry["stats"] = src.stats()
                if not quiet:
                    shown = {k: v for k, v in entry["stats"].items() if k != "skipped_files"}
                    described = (f"{k} {json.dumps(v, ensure_ascii=False)}" for k, v in shown.items())
                    print(f"{src.name}: " + ", ".join(described))
            source_stats.append(entry)
        else:
            doc = _TextDoc(src, src.artist)
            for chunk in src.chunks():
                chunk = chunk.lower() if lowercase else chunk
                seen[np.unique(codepoints(chunk))] = True
                doc.n_chars += len(chunk)
                reading.update(len(chunk))
            texts.append(doc)
            source_stats.append({"source": src.name, "chars": doc.n_chars})
    reading.close()
    songs = _select_artists(songs, artists, exclude_artists)
    if max_songs_per_artist:
        songs = _cap_songs(songs, max_songs_per_artist, seed)
    for song in songs:
        seen[np.unique(codepoints(song.text))] = True
    total_chars = sum(len(s.text) for s in songs) + sum(d.n_chars for d in texts)
    if total_chars == 0:
        raise LyricdistError(f"sources {list(sources)} hold no text; give non-empty lyrics or text files")

    vocab = Vocab(chars=[chr(c) for c in np.flatnonzero(seen)], lowercase=lowercase)
    table = vocab.lookup_table()
    dtype = vocab.dtype

    artist_names: list[str] = []
    artist_index: dict[str, int] = {}

    def artist_id(name: str) -> int:
        if name not in artist_index:
            artist_index[name] = len(artist_names)
            artist_names.append(name)
        return artist_index[name]

    song_artists = [artist_id(s.artist) for s in songs]
    text_artists = [artist_id(d.artist) for d in texts]
    is_val = _split_songs(songs, song_artists, val_fraction, seed)
    rng = np.random.default_rng(seed + 1)
    train_order = [int(i) for i in rng.permutation(np.flatnonzero(~is_val))]  # mix artists across streams
    val_order = [int(i) for i in np.flatnonzero(is_val)]

    # Pass 2: encode and write.
    encoding = _progress("encoding", total_chars, quiet)
    with atomic_dir(out_dir) as tmp, encoding:
        files = {split: open(tmp / f"{split}.bin", "wb") for split in ("train", "val")}
        pos = {"train": 0, "val": 0}
        docs: dict[str, list[tuple[int, int]]] = {"train": [], "val": []}

        def write(split: str, text: str, start_doc: int | None) -> None:
            if start_doc is not None:
                docs[split].append((pos[split], start_doc))
            ids = table[codepoints(text)].astype(dtype)
            files[split].write(ids.tobytes())
            pos[split] += len(ids)
            encoding.update(len(ids))

        try:
            for split, order in (("train", train_order), ("val", val_order)):
                for i in order:
                    write(split, songs[i].text, song_artists[i])
            for doc, a in zip(texts, text_artists):
                n_val = int(round(doc.n_chars * val_fraction))
                n_train = doc.n_chars - n_val
                seen_chars = 0
                started = {"train": False, "val": False}
                for chunk in doc.source.chunks():
                    chunk = chunk.lower() if lowercase else chunk
                    cut = min(max(n_train - seen_chars, 0), len(chunk))
                    for split, piece in (("train", chunk[:cut]), ("val", chunk[cut:])):
                        if piece:
                            write(split, piece, None if started[split] else a)
                            started[split] = True
                    seen_chars += len(chunk)
        finally:
            for f in files.values():
                f.close()
        for split in ("train", "val"):
            arr = np.asarray(docs[split], dtype=np.int64).reshape(-1, 2)
            np.save(tmp / f"{split}_docs.npy", arr)
        atomic_write_json(tmp / "vocab.json", vocab.to_json())
        meta = {
            "format": CORPUS_FORMAT,
            "version": CORPUS_VERSION,
            "dtype": dtype.name,
            "vocab_size": len(vocab),
            "lowercase": lowercase,
            "val_fraction": val_fraction,
            "seed": seed,
            "artists": artist_names,
            "sources": source_stats,
            "splits": {
                split: {"chars": pos[split], "docs": len(docs[split])} for split in ("train", "val")
            },
            "songs": {"train": len(train_order), "val": len(val_order), "skipped_empty": skipped_empty},
            "songs_per_artist": {
                name: int(sum(1 for a in song_artists if a == i)) for i, name in enumerate(artist_names)
            },
            "artist_stats": _artist_stats(songs, song_artists, is_val, artist_names),
            "seconds": round(time.time() - t0, 3),
        }
        atomic_write_json(tmp / "meta.json", meta)
    if not quiet:
        print(
            f"prepared {out_dir}: vocab {len(vocab)} ({dtype.name}), train {pos['train']:,} chars / "
            f"{len(docs['train'])} docs, val {pos['val']:,} chars / {len(docs['val'])} docs, "
            f"{len(artist_names)} artist(s), {meta['seconds']:.1f}s"
        )
    return meta


def cli_parser():
    from .options import function_parser
    from .sources import source_options

    return function_parser(prepare, words="sources", skip=("source_options", "quiet"), more=(source_options,))


def cli_run(parser, args) -> int:
    from .options import call
    from .sources import source_options

    call(prepare, args, source_options=call(source_options, args), quiet=False)
    return 0
