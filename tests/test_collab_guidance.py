"""Stronger artist conditioning (model.artist_head), the measured default guidance, and guided generation that
carries its own memorisation figures (issue 24)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from conftest import REPO, corpus_songs, run_main, tiny_config
from lyricdist.checkpoint import load_checkpoint, save_checkpoint
from lyricdist.collab import DEFAULT_GUIDANCE, collab, format_song
from lyricdist.data import Corpus
from lyricdist.errors import LyricdistError
from lyricdist.memorization import CorpusIndex, song_memorization, words
from lyricdist.model import CharRNN, ModelConfig
from lyricdist.train import train
from lyricdist.transfer import init_from_checkpoint
from lyricdist.vocab import Vocab

HEADS = ["shift", "film"]


def _model(head: str, seed: int = 0, **kw) -> CharRNN:
    torch.manual_seed(seed)
    cfg = ModelConfig(num_layers=1, hidden_size=16, artist_embedding_dim=4, artist_head=head, **kw)
    return CharRNN(cfg, vocab_size=9, num_artists=2).eval()


# ---- model.artist_head ----------------------------------------------------------------------------------
@pytest.mark.parametrize("head", HEADS)
def test_artist_head_starts_as_the_input_only_model(head):
    plain, model = _model("none"), _model(head)
    missing = model.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["artist_out.bias", "artist_out.weight"]
    x = torch.randint(0, 9, (2, 7))
    for a in (0, 1):
        artist = torch.tensor([a, a])
        assert torch.equal(model(x, artist=artist)[0], plain(x, artist=artist)[0])


@pytest.mark.parametrize("head", HEADS)
def test_artist_head_carries_the_artist_to_the_output(head):
    """With the artist's input columns zeroed the recurrent layers cannot tell the artists apart: only the head can."""
    plain, model = _model("none"), _model(head)
    with torch.no_grad():
        for m in (plain, model):
            m.rnn.weight_ih_l0[:, 9:] = 0.0  # one-hot characters first, then the artist embedding
        model.load_state_dict(plain.state_dict(), strict=False)
        torch.nn.init.normal_(model.artist_out.weight)
    x = torch.randint(0, 9, (1, 6))
    same = [plain(x, artist=torch.tensor([a]))[0] for a in (0, 1)]
    assert torch.allclose(same[0], same[1])
    la, lb = (model(x, artist=torch.tensor([a]))[0] for a in (0, 1))
    assert (la - lb).abs().max() > 1e-3
    if head == "shift":  # linear in the embedding: the midway artist reads exactly midway
        e = model.artist_embed.weight.detach()
        mid = model(x, artist_vec=((e[0] + e[1]) / 2)[None])[0]
        assert torch.allclose(mid, (la + lb) / 2, atol=1e-5)


def test_artist_head_needs_an_artist_embedding():
    with pytest.raises(LyricdistError, match="artist_embedding_dim"):
        ModelConfig(artist_head="film").validate()
    with pytest.raises(LyricdistError, match="one of none, shift, film"):
        ModelConfig(artist_embedding_dim=4, artist_head="adapter").validate()


def test_checkpoints_without_artist_head_still_load_and_new_ones_round_trip(tmp_path):
    vocab = Vocab(list("\n abcdefg"))
    old = _model("none")
    path = save_checkpoint(tmp_path / "old", old, vocab, artists=["Ann", "Bob"])
    config = json.loads((path / "config.json").read_text())
    del config["model"]["artist_head"]  # as written before the field existed
    (path / "config.json").write_text(json.dumps(config))
    loaded, _, _ = load_checkpoint(path)
    x = torch.randint(0, 9, (1, 5))
    assert loaded.cfg.artist_head == "none" and loaded.artist_out is None
    assert torch.equal(loaded(x, artist=torch.tensor([1]))[0], old(x, artist=torch.tensor([1]))[0])

    film = _model("film", seed=3)
    with torch.no_grad():
        torch.nn.init.normal_(film.artist_out.weight)
    loaded, _, _ = load_checkpoint(save_checkpoint(tmp_path / "film", film, vocab, artists=["Ann", "Bob"]))
    assert loaded.cfg.artist_head == "film"
    assert torch.equal(loaded(x, artist=torch.tensor([0]))[0], film(x, artist=torch.tensor([0]))[0])


def test_fine_tuning_refuses_a_different_artist_head(tmp_path):
    vocab = Vocab(list("\n abcdefg"))
    path = save_checkpoint(tmp_path / "base", _model("none"), vocab, artists=["Ann", "Bob"])
    with pytest.raises(LyricdistError, match="model.artist_head is film here but none"):
        init_from_checkpoint(_model("film"), vocab, str(path), artists=["Ann", "Bob"])


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_film_head_trains(demo_corpus, tmp_path, precision, request):
    if precision == "bf16":
        request.getfixturevalue("force_bf16")
    out = tmp_path / "film"
    metrics = train(tiny_config(demo_corpus, out, "--model.artist_embedding_dim=4", "--model.artist_head=film",
                                "--train.max_steps=12", "--train.eval_every=12", "--samples.enabled=false",
                                f"--train.mixed_precision={'no' if precision == 'fp32' else 'bf16'}"))
    assert np.isfinite(metrics["val_loss"])
    model, _, config = load_checkpoint(out)
    assert config["model"]["artist_head"] == "film"
    assert model.artist_out.weight.abs().sum() > 0  # it learned from zero


# ---- the default guidance ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def conditioned(demo_corpus, tmp_path_factory):
    """A small artist-conditioned checkpoint (random weights) whose config names the demo corpus."""
    corpus = Corpus(demo_corpus)
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(num_layers=1, hidden_size=24, artist_embedding_dim=4, artist_head="film"),
                    len(corpus.vocab), num_artists=len(corpus.artists))
    path = tmp_path_factory.mktemp("cond") / "ckpt"
    save_checkpoint(path, model, corpus.vocab, artists=corpus.artists, corpus=str(demo_corpus))
    return path, corpus.artists


def test_default_guidance_is_the_measured_constant_for_one_conditioned_model(conditioned):
    path, (a, b) = conditioned
    kw = dict(turns=2, lines=1, seed=0)
    song = collab(a, b, model=str(path), **kw)
    assert song["settings"]["guidance"] == DEFAULT_GUIDANCE
    assert song == collab(a, b, model=str(path), guidance=DEFAULT_GUIDANCE, **kw)
    assert collab(a, b, model=str(path), mode="blend", **kw)["settings"]["guidance"] == 0.0  # alternate only
    assert collab(str(path), str(path), **kw)["settings"]["guidance"] == 0.0  # two checkpoints: off by default


def test_guided_collab_reports_its_copying_in_the_output_and_json(conditioned, tmp_path):
    path, (a, b) = conditioned
    out = tmp_path / "song.json"
    proc = run_main("collab", a, b, "--model", str(path), "--turns", "2", "--lines", "2", "--guidance", "1",
                    "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    song = json.loads(out.read_text())
    memo = song["memorization"]  # guided: checked without being asked
    assert {r["artist"] for r in memo["rows"]} == {a, b}
    assert [s["author"] for s in memo["segments"]] == [a, b] and [s["segment"] for s in memo["segments"]] == [0, 1]
    for s in memo["segments"]:
        assert s["artist"] == s["author"] and s["past_heldout_p90"] == (s["longest_word_span"] >
                                                                         s["heldout_longest_word_span_p90"])
    assert memo["past_heldout_p90"] == [s["segment"] for s in memo["segments"] if s["past_heldout_p90"]]
    assert proc.stdout == format_song(song) and "memorisation (word 5-grams" in proc.stderr
    plain = run_main("collab", a, b, "--model", str(path), "--turns", "2", "--lines", "2", "--guidance", "0",
                     "--out", str(out))
    assert plain.returncode == 0 and "memorization" not in json.loads(out.read_text())
    off = run_main("collab", a, b, "--model", str(path), "--guidance", "1", "--check_memorization", "false",
                   "--out", str(out))
    assert off.returncode == 0 and "memorization" not in json.loads(out.read_text())


def test_guided_generation_without_a_reachable_corpus_says_it_was_not_checked(conditioned, tmp_path):
    path, (a, b) = conditioned
    moved = tmp_path / "moved"
    model, vocab, config = load_checkpoint(path)
    save_checkpoint(moved, model, vocab, artists=config["artists"], corpus=str(tmp_path / "gone"))
    out = tmp_path / "song.json"
    proc = run_main("collab", a, b, "--model", str(moved), "--turns", "2", "--lines", "1", "--guidance", "1",
                    "--out", str(out))
    assert proc.returncode == 0 and "memorisation check not run" in proc.stderr
    assert "memorisation check not run" in json.loads(out.read_text())["memorization"]["error"]
    asked = run_main("collab", a, b, "--model", str(moved), "--guidance", "1", "--check_memorization", "true")
    assert asked.returncode == 1 and "--corpus" in asked.stderr  # asked for: an error, as before
    proc = run_main("sample", str(moved), "--artist", a, "--against", b, "--guidance", "1", "--length", "30", "--json", "true")
    assert proc.returncode == 0 and "memorisation check not run" in json.loads(proc.stdout)["memorization_error"]


def test_guided_sample_carries_its_memorisation_rows(conditioned):
    path, (a, b) = conditioned
    proc = run_main("sample", str(path), "--artist", a, "--against", b, "--guidance", "2", "--length", "120",
                    "--json", "true")
    row = json.loads(proc.stdout)
    assert {r["artist"] for r in row["memorization"]} == {a, b}
    assert all("past_heldout_p90" in r for r in row["memorization"])
    plain = json.loads(run_main("sample", str(path), "--artist", a, "--length", "40", "--json", "true").stdout)
    assert "memorization" not in plain  # unguided and not asked: no check


# ---- the span rule of generation ------------------------------------------------------------------------
def test_a_span_past_the_held_out_p90_is_flagged_and_labelled(demo_corpus):
    index = CorpusIndex(demo_corpus)
    artist, song = next((a, t) for a, t in corpus_songs(demo_corpus, "train") if len(words(t)) > 40)
    copied = " ".join(words(song)[5:30])  # 25 consecutive words of one training song
    row = next(r for r in index.check(copied) if r.artist == artist)
    assert row.longest_word_span >= 25 and row.past_heldout_p90
    assert row.heldout_longest_word_span_p90 < 25
    fresh = next(r for r in index.check("qqzx wvvk kkqz xqqw zzvq") if r.artist == artist)
    assert not fresh.past_heldout_p90 and fresh.longest_word_span == 0
    other = next(a for a in index.artists if a != artist)
    segments = [{"author": "primetext", "text": "oh\n"}, {"author": other, "text": "qqzx wvvk kkqz\n"},
                {"author": artist, "text": copied + "\n"}]
    report = song_memorization(segments, [str(demo_corpus)])
    assert report["past_heldout_p90"] == [2]
    assert [(s["segment"], s["artist"]) for s in report["segments"]] == [(1, other), (2, artist)]
    shown = format_song({"segments": segments, "memorization": report})
    assert f"[{artist}] (copies a " in shown and f"[{other}]\n" in shown and "90th percentile" in shown



def test_the_app_says_which_part_copies_past_the_held_out_p90(demo_corpus):
    """The page shows what the CLI shows: the flagged part's notice under its author's name, and the list of such
    parts at the top of the memorisation report."""
    from lyricdist.app import memorization_markdown, song_html

    index = CorpusIndex(demo_corpus)
    artist, song = next((a, t) for a, t in corpus_songs(demo_corpus, "train") if len(words(t)) > 40)
    other = next(a for a in index.artists if a != artist)
    segments = [{"author": other, "text": "qqzx wvvk kkqz\n"},
                {"author": artist, "text": " ".join(words(song)[5:30]) + "\n"}]
    report = song_memorization(segments, [str(demo_corpus)], quiet=True)
    page = song_html({"segments": segments}, report)
    assert page.count('class="copied"') == 1 and page.index(artist) < page.index('class="copied"')
    assert "90th percentile" in page and "90th percentile" not in song_html({"segments": segments})
    table = memorization_markdown(report)
    assert f"part 2 ({artist}) copies a" in table and f"part 1 ({other})" not in table


def test_against_without_guidance_is_a_one_line_error(conditioned):
    path, (a, b) = conditioned
    assert DEFAULT_GUIDANCE == 0.0  # measured: unguided already reads like the artist (README)
    proc = run_main("sample", str(path), "--artist", a, "--against", b, "--length", "20")
    assert proc.returncode != 0 and proc.stderr.count("\n") == 1 and "--guidance" in proc.stderr, proc.stderr
    assert run_main("sample", str(path), "--artist", a, "--against", b, "--guidance", "0.5", "--length",
                    "20").returncode == 0

# ---- the benchmark's fluency and rule ----------------------------------------------------------------------
def _bench():
    spec = importlib.util.spec_from_file_location("collab_quality", REPO / "scripts" / "bench" / "collab_quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_word_validity_leaves_out_the_artists_own_held_out_songs():
    bench = _bench()
    train_songs = [("A", "dil mera\n"), ("B", "raat chaand\n")]
    val_songs = [("A", "sapna anokha\n"), ("B", "sapna tera\n")]
    vocab = bench.word_vocabularies(train_songs, val_songs, ["A", "B"])
    assert "anokha" not in vocab["A"] and "anokha" in vocab["B"] and "tera" in vocab["A"]
    assert bench.word_validity(["sapna anokha dil xyz\n"], ["A"], vocab) == pytest.approx(0.5)


def test_the_guidance_rule_needs_attribution_copying_and_fluency():
    bench = _bench()
    real = {"judge_attribution": 0.8, "word_validity": 0.9}
    copying = {"A": {"word_ngram_share": 0.01, "heldout_word_ngram_share": 0.01},
               "B": {"word_ngram_share": 0.0, "heldout_word_ngram_share": 0.0}}
    row = {"judge_attribution": 0.8, "word_validity": 0.86, "copying": copying}
    assert bench.meets(row, real) == {"attribution": True, "copying": True, "fluency": True}
    assert not bench.meets({**row, "judge_attribution": 0.79}, real)["attribution"]
    assert not bench.meets({**row, "word_validity": 0.85}, real)["fluency"]  # < 95% of 0.9
    more = {**copying, "B": {"word_ngram_share": 0.004, "heldout_word_ngram_share": 0.0}}
    assert not bench.meets({**row, "copying": more}, real)["copying"]
