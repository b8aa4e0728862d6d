"""prepare: vocabulary, token arrays, splits, bad input, bounded memory."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest

from conftest import run_cli
from lyricdist.data import Corpus
from lyricdist.errors import LyricdistError
from lyricdist.prepare import prepare
from lyricdist.sources.demo import DemoSource
from lyricdist.vocab import smallest_dtype


def test_text_file_validation_is_its_last_fraction(tmp_path):
    text = "".join(f"line {i}: the quick brown fox\n" for i in range(200))
    src = tmp_path / "input.txt"
    src.write_text(text, encoding="utf-8")
    meta = prepare([str(src)], str(tmp_path / "c"), val_fraction=0.25, quiet=True)
    c = Corpus(tmp_path / "c")
    train = c.vocab.decode(np.asarray(c.tokens("train")))
    val = c.vocab.decode(np.asarray(c.tokens("val")))
    assert train + val == text  # nothing lost, nothing reordered; plain text keeps its case
    assert len(val) == round(len(text) * 0.25)
    assert meta["lowercase"] is False
    assert c.tokens("train").dtype == np.uint8
    assert c.vocab.chars == sorted(set(text))


def test_song_split_is_whole_songs_deterministic_and_per_artist(tmp_path):
    songs = list(DemoSource("demo").songs())
    m1 = prepare(["demo"], str(tmp_path / "a"), val_fraction=0.2, seed=7, quiet=True)
    m2 = prepare(["demo"], str(tmp_path / "b"), val_fraction=0.2, seed=7, quiet=True)
    prepare(["demo"], str(tmp_path / "c"), val_fraction=0.2, seed=8, quiet=True)
    a, b, c = Corpus(tmp_path / "a"), Corpus(tmp_path / "b"), Corpus(tmp_path / "c")
    assert np.array_equal(np.asarray(a.tokens("val")), np.asarray(b.tokens("val")))
    assert not np.array_equal(np.asarray(a.tokens("val")), np.asarray(c.tokens("val")))
    assert m1["lowercase"] is True and m1 == {**m2, "seconds": m1["seconds"]}
    # every validation document is exactly one whole (lowercased) song, and never also in train
    song_texts = {s.text.lower() for s in songs}
    val = a.vocab.decode(np.asarray(a.tokens("val")))
    train = a.vocab.decode(np.asarray(a.tokens("train")))
    starts = list(a.docs("val")[:, 0]) + [len(val)]
    val_docs = [val[s:e] for s, e in zip(starts[:-1], starts[1:])]
    assert val_docs and all(d in song_texts for d in val_docs)
    tstarts = list(a.docs("train")[:, 0]) + [len(train)]
    train_docs = {train[s:e] for s, e in zip(tstarts[:-1], tstarts[1:])}
    assert not train_docs & set(val_docs)
    assert len(train_docs) + len(val_docs) == len(song_texts)
    # both artists are represented in validation
    assert set(a.docs("val")[:, 1]) == {0, 1}
    assert sorted(m1["artists"]) == ["DJ Kilowatt", "Juniper Vale"]


def test_artist_filter_and_unknown_artist(tmp_path):
    meta = prepare(["demo"], str(tmp_path / "one"), artists=["juniper vale"], quiet=True)
    assert meta["artists"] == ["Juniper Vale"]
    with pytest.raises(LyricdistError, match="not found"):
        prepare(["demo"], str(tmp_path / "two"), artists=["Nobody"], quiet=True)
    assert not (tmp_path / "two").exists()


@pytest.mark.parametrize("n,dtype", [(2, np.uint8), (256, np.uint8), (257, np.uint16), (70000, np.uint32)])
def test_smallest_dtype(n, dtype):
    assert smallest_dtype(n) == np.dtype(dtype)


def test_wide_vocabulary_uses_uint16(tmp_path):
    text = "".join(chr(0x4E00 + i) for i in range(300)) * 4
    (tmp_path / "cjk.txt").write_text(text, encoding="utf-8")
    prepare([str(tmp_path / "cjk.txt")], str(tmp_path / "c"), quiet=True)
    c = Corpus(tmp_path / "c")
    assert c.tokens("train").dtype == np.uint16 and len(c.vocab) == 300


def test_existing_output_is_never_clobbered(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious", encoding="utf-8")
    with pytest.raises(LyricdistError, match="not a lyricdist corpus"):
        prepare(["demo"], str(mine), quiet=True)
    assert (mine / "notes.txt").read_text() == "precious"
    prepare(["demo"], str(tmp_path / "c"), quiet=True)
    with pytest.raises(LyricdistError, match="--overwrite true"):
        prepare(["demo"], str(tmp_path / "c"), quiet=True)
    prepare(["demo"], str(tmp_path / "c"), val_fraction=0.3, overwrite=True, quiet=True)
    assert json.loads((tmp_path / "c" / "meta.json").read_text())["val_fraction"] == 0.3


def _peak_prepare(tmp_path, name: str, mib: int) -> tuple[int, int]:
    big = tmp_path / f"{name}.txt"
    line = "all the world's a stage, and all the men and women merely players\n"
    with open(big, "w", encoding="utf-8") as f:
        for _ in range(mib * 1024 * 1024 // len(line)):
            f.write(line)
    tracemalloc.start()
    try:
        meta = prepare([f"text:{big}"], str(tmp_path / name), quiet=True, source_options={"chunk_chars": 256 * 1024})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert meta["splits"]["train"]["chars"] + meta["splits"]["val"]["chars"] == big.stat().st_size
    return peak, big.stat().st_size


def test_memory_stays_bounded_on_large_text(tmp_path):
    """Peak memory depends on the chunk size, not on the input size (so 1 GB prepares like 8 MB)."""
    small_peak, _ = _peak_prepare(tmp_path, "small", 4)
    big_peak, big_size = _peak_prepare(tmp_path, "big", 32)
    assert big_peak < small_peak * 1.2 + 2**20, (small_peak, big_peak)
    assert big_peak < big_size / 3, f"peak {big_peak / 2**20:.1f} MiB for a {big_size / 2**20:.1f} MiB input"


def test_tinyshakespeare_prepares_like_char_rnn(tmp_path):
    """The classic char-rnn corpus: 65 characters, case kept, the last 10% held out."""
    from conftest import shared_file

    src = shared_file("tinyshakespeare", "input.txt")
    meta = prepare([str(src)], str(tmp_path / "c"), val_fraction=0.1, quiet=True)
    n = len(src.read_text(encoding="utf-8"))
    assert meta["vocab_size"] == 65 and meta["dtype"] == "uint8" and meta["lowercase"] is False
    assert meta["splits"]["val"]["chars"] == round(n * 0.1)
    assert meta["splits"]["train"]["chars"] + meta["splits"]["val"]["chars"] == n


def test_max_songs_per_artist_and_per_artist_stats(tmp_path):
    full = prepare(["demo"], str(tmp_path / "full"), quiet=True)
    capped = prepare(["demo"], str(tmp_path / "capped"), max_songs_per_artist=10, quiet=True)
    assert all(n > 10 for n in full["songs_per_artist"].values())
    assert capped["songs_per_artist"] == {a: 10 for a in full["artists"]}
    for _name, row in capped["artist_stats"].items():
        assert row["train_songs"] + row["val_songs"] == row["songs"] == 10 and row["chars"] > 0
    with pytest.raises(LyricdistError, match="max_songs_per_artist must be > 0, got 0"):
        prepare(["demo"], str(tmp_path / "bad"), max_songs_per_artist=0, quiet=True)


def test_artists_option_takes_a_name_or_a_list(tmp_path):
    """jsonargparse's list options: `--artists+ NAME` (repeatable) or `--artists '[A, B]'`."""
    proc = run_cli("prepare", "demo", "--out", str(tmp_path / "one"), "--artists+", "Juniper Vale")
    assert "1 artist(s)" in proc.stdout
    proc = run_cli("prepare", "demo", "--out", str(tmp_path / "two"), "--artists", "[Juniper Vale, DJ Kilowatt]")
    assert "2 artist(s)" in proc.stdout
    meta = prepare(["demo"], str(tmp_path / "ex"), exclude_artists=["dj kilowatt"], quiet=True)
    assert meta["artists"] == ["Juniper Vale"]


def test_progress_shows_on_a_pass_that_takes_a_while(tmp_path, capsys, monkeypatch):
    """Both passes report characters on stderr once they have run PROGRESS_DELAY_S (set to 0 here, as if the
    input were large); a quick pass (the default 2 s delay on a small file) and `quiet` show nothing."""
    import lyricdist.prepare as prep

    src = tmp_path / "in.txt"
    src.write_text("a line of text\n" * 2000)
    prepare([str(src)], str(tmp_path / "quick"))
    assert "encoding" not in capsys.readouterr().err
    monkeypatch.setattr(prep, "PROGRESS_DELAY_S", 0)
    prepare([str(src)], str(tmp_path / "slow"))
    err = capsys.readouterr().err
    assert "reading" in err and "encoding" in err and "char" in err, err
    prepare([str(src)], str(tmp_path / "quiet"), quiet=True)
    assert capsys.readouterr().err == ""
