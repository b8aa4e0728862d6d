"""Copying measured in words: word 5-gram share and longest copied word span, against the artist's real held-out
songs; the warning fires only when a text copies clearly more than those do."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import corpus_songs
from lyricdist.memorization import WORD_NGRAM, CorpusIndex, check_texts, format_report, words


def _ngrams(ws, n):
    return {tuple(ws[i : i + n]) for i in range(len(ws) - n + 1)}


def test_word_share_and_longest_span_match_a_brute_force_count(demo_corpus):
    index = CorpusIndex(demo_corpus)
    train = corpus_songs(demo_corpus, "train")
    artist, song = next((a, t) for a, t in train if a == "Juniper Vale" and len(words(t)) > 40)
    copied = words(song)[10:22]  # 12 consecutive words of one training song
    text = "qqzx wvvk " + " ".join(copied) + " kkqz xqqw zzvq"
    row = next(r for r in index.check(text) if r.artist == artist)
    grams = _ngrams(words(text), WORD_NGRAM)
    known = set().union(*(_ngrams(words(t), WORD_NGRAM) for a, t in train if a == artist))
    ws = words(text)
    expected = sum(tuple(ws[i : i + WORD_NGRAM]) in known for i in range(len(ws) - WORD_NGRAM + 1))
    assert row.word_ngram_share == pytest.approx(expected / (len(ws) - WORD_NGRAM + 1), abs=1e-4)
    assert row.longest_word_span == 12 and row.longest_words == " ".join(copied)
    assert grams  # the text is long enough to have 5-grams


def test_reference_comes_from_the_artists_held_outcorpus_songs(demo_corpus):
    index = CorpusIndex(demo_corpus)
    val = corpus_songs(demo_corpus, "val")
    for k, artist in enumerate(index.artists):
        ref = index.heldout(k)
        mine = [t for a, t in val if a == artist]
        assert ref["heldout_songs"] == len(mine) > 0
        assert 0 <= ref["heldout_word_ngram_share"] <= 1 and ref["heldout_longest_word_span_max"] >= 0


def test_a_recited_song_warns_and_new_text_in_the_artists_words_does_not(demo_corpus, capsys):
    index = CorpusIndex(demo_corpus)
    train = corpus_songs(demo_corpus, "train")
    artist, song = next((a, t) for a, t in train if a == "DJ Kilowatt" and len(words(t)) > 60)
    recited = next(r for r in index.check(song) if r.artist == artist)
    assert recited.warn and recited.word_ngram_share > 0.9 and recited.longest_word_span >= 60
    rng = np.random.default_rng(0)
    vocabulary = sorted({w for a, t in train if a == artist for w in words(t)})
    shuffled = "\n".join(" ".join(rng.choice(vocabulary, 6)) for _ in range(12))  # the artist's words, new lines
    fresh = next(r for r in index.check(shuffled) if r.artist == artist)
    assert not fresh.warn and fresh.longest_word_span < 5
    rows = check_texts([song], [str(demo_corpus)])[0]
    assert "possible memorisation of DJ Kilowatt" in capsys.readouterr().err
    report = format_report(rows)
    assert "word 5-grams" in report and "held-out songs" in report and "<-- memorised?" in report
