"""Transfer learning across vocabularies, artist-conditioned models, two-artist songs, memorisation checks."""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_cli, tiny_config
from lyricdist.checkpoint import load_checkpoint, save_checkpoint
from lyricdist.collab import Author, Voice, _blend, _write_lines, blend_probs, collab, format_song
from lyricdist.errors import LyricdistError
from lyricdist.memorization import CorpusIndex
from lyricdist.model import CharRNN, ModelConfig
from lyricdist.prepare import prepare
from lyricdist.sample import sample
from lyricdist.train import train
from lyricdist.transfer import init_from_checkpoint, merge_vocab
from lyricdist.vocab import Vocab

NEW_CHARS = "☃ÉØ"


# ---- vocabulary merge -------------------------------------------------------------------------------------
def test_merge_vocab_keeps_corpus_ids_and_appends_base_only_chars():
    merged = merge_vocab(["\n", "a", "z", "é"], ["\n", " ", "a", "b"])
    assert merged == ["\n", "a", "z", "é", " ", "b"]
    assert merge_vocab(["a", "b"], ["a", "b"]) == ["a", "b"]


def _base_checkpoint(tmp_path: Path, embedding_dim: int) -> tuple[Path, CharRNN, Vocab]:
    torch.manual_seed(0)
    cfg = ModelConfig(num_layers=2, hidden_size=16, embedding_dim=embedding_dim, artist_embedding_dim=3)
    base_vocab = Vocab(list("\n abcdefg"))
    base = CharRNN(cfg, len(base_vocab), num_artists=2)
    path = save_checkpoint(tmp_path / f"base{embedding_dim}", base, base_vocab, artists=["Ann", "Bob"])
    return path, base.eval(), base_vocab


@pytest.mark.parametrize("embedding_dim", [0, 5])
def test_init_from_checkpoint_reproduces_the_base_model_on_shared_characters(tmp_path, embedding_dim):
    path, base, base_vocab = _base_checkpoint(tmp_path, embedding_dim)
    vocab = Vocab(list("\n aceg" + NEW_CHARS))  # lacks b, d, f; adds three characters
    cfg = ModelConfig(num_layers=2, hidden_size=16, embedding_dim=embedding_dim, artist_embedding_dim=3)
    model = CharRNN(cfg, len(vocab), num_artists=2)
    corpus_chars = list(vocab.chars)
    vocab, info = init_from_checkpoint(model, vocab, str(path), artists=["Bob", "Zed"])

    assert corpus_chars == list("\n aceg" + NEW_CHARS)  # the corpus vocabulary is left as it was
    assert vocab.chars[:9] == list("\n aceg" + NEW_CHARS)  # corpus ids unchanged
    assert sorted(vocab.chars[9:]) == ["b", "d", "f"]
    assert model.vocab_size == len(vocab) == info["vocab_size"] == 12
    assert info["rows_kept"] == len(base_vocab) and info["chars_added"] == list(NEW_CHARS)
    assert info["artists_kept"] == ["Bob"]

    text = "bad cafe\nfeed a bee"
    mine = torch.tensor([[vocab.id_of(c) for c in text]])
    theirs = torch.tensor([[base_vocab.id_of(c) for c in text]])
    model.eval()
    with torch.no_grad():
        out, _ = model(mine, artist=torch.zeros_like(mine))  # artist 0 here is Bob, base artist 1
        ref, _ = base(theirs, artist=torch.ones_like(theirs))
        new_ids = [vocab._index[c] for c in NEW_CHARS]
        shared = [vocab._index[c] for c in base_vocab.chars]
        torch.testing.assert_close(out[..., shared], ref, rtol=1e-5, atol=1e-5)
        # New characters start as unlikely as the base model's rarest one, so the loss starts where the base's is.
        assert torch.all(out[..., new_ids] <= ref.max(-1, keepdim=True).values)
        assert torch.allclose(model.head.bias[new_ids], base.head.bias.min().expand(len(new_ids)))


def test_init_from_checkpoint_rejects_a_different_shape(tmp_path):
    path, _, _ = _base_checkpoint(tmp_path, 0)
    vocab = Vocab(list("\n ab"))
    model = CharRNN(ModelConfig(num_layers=2, hidden_size=32, artist_embedding_dim=3), len(vocab), num_artists=1)
    with pytest.raises(LyricdistError, match="model.hidden_size is 32 here but 16"):
        init_from_checkpoint(model, vocab, str(path))


# ---- collab maths on stub models -------------------------------------------------------------------------
def test_blend_probs_product_and_mixture():
    pa, pb = torch.tensor([0.5, 0.3, 0.2]), torch.tensor([0.1, 0.6, 0.3])
    for rule in ("product", "mixture"):
        torch.testing.assert_close(blend_probs(pa, pb, 0.0, rule), pa)
        torch.testing.assert_close(blend_probs(pa, pb, 1.0, rule), pb)
    geometric = torch.tensor([0.5**0.75 * 0.1**0.25, 0.3**0.75 * 0.6**0.25, 0.2**0.75 * 0.3**0.25])
    torch.testing.assert_close(blend_probs(pa, pb, 0.25, "product"), geometric / geometric.sum())
    torch.testing.assert_close(blend_probs(pa, pb, 0.25, "mixture"), torch.tensor([0.4, 0.375, 0.225]))
    # product: a character one artist rules out cannot be drawn; mixture: either artist may pick it
    assert blend_probs(torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0]), 0.5, "product")[1] < 1e-12
    torch.testing.assert_close(blend_probs(torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0]), 0.5, "mixture"),
                               torch.tensor([0.75, 0.25]))


class FixedDistribution(torch.nn.Module):
    """A stub language model: the same next-character logits whatever it has read."""

    def __init__(self, probs: list[float]):
        super().__init__()
        self.head = torch.nn.Linear(1, len(probs))
        self.logits = torch.log(torch.tensor(probs))

    def forward(self, x, state=None, **_):
        return self.logits.expand(x.shape[0], x.shape[1], -1), state


def test_blend_at_alpha_zero_writes_as_a_alone_and_maps_b_vocabulary():
    a = Author("A", FixedDistribution([0.2, 0.5, 0.3]), Vocab(list("\nab")))
    b = Author("B", FixedDistribution([0.0, 0.6, 0.4]), Vocab(list("a\nb")))  # another order; never "a"
    for rule in ("product", "mixture"):
        voice = Voice(a, 1.0)
        voice.prime("")
        alone = _write_lines(5, torch.Generator().manual_seed(4), voice.step)
        assert _blend(a, b, "", 5, 0.0, rule, 1.0, torch.Generator().manual_seed(4)) == alone
        only_b = _blend(a, b, "", 5, 1.0, rule, 1.0, torch.Generator().manual_seed(4))
        assert "a" not in only_b and "b" in only_b


def test_alternate_primes_each_turn_with_the_last_context_lines(tmp_path, monkeypatch):
    paths = []
    torch.manual_seed(0)
    for name in ("Ann", "Bob"):
        vocab = Vocab(list("\n abcdefg"))
        model = CharRNN(ModelConfig(num_layers=1, hidden_size=16), len(vocab))
        paths.append(str(save_checkpoint(tmp_path / name, model, vocab, artists=[name])))
    primed = []
    real_prime = Voice.prime
    monkeypatch.setattr(Voice, "prime", lambda self, text: (primed.append(text), real_prime(self, text))[1])
    for context in (2, 0):
        primed.clear()
        song = collab(*paths, turns=3, lines=3, context_lines=context, primetext="abc\ndef\ngab\n", seed=1)
        texts = [s["text"] for s in song["segments"]]
        assert [s["author"] for s in song["segments"]] == ["primetext", "Ann", "Bob", "Ann"]
        assert all(len([l for l in t.splitlines() if l.strip()]) == 3 for t in texts[1:])
        if context == 2:
            assert primed == ["def\ngab\n", *("".join(t.splitlines(keepends=True)[-2:]) for t in texts[1:3])]
        else:
            assert primed == ["", "", ""]


# ---- memorisation index -----------------------------------------------------------------------------------
def _longest_common_substring(a: str, b: str) -> int:
    best = 0
    for i in range(len(a)):
        for j in range(i + best + 1, len(a) + 1):
            if a[i:j] in b:
                best = j - i
            else:
                break
    return best


def test_memorization_index_finds_the_longest_copied_span_per_artist(tmp_path):
    rng = np.random.default_rng(0)
    songs = {}
    for name in ("one", "two"):
        songs[name] = "".join(rng.choice(list("abcd \n"), 400))
        (tmp_path / f"{name}.txt").write_text(songs[name], encoding="utf-8")
    corpus = tmp_path / "corpus"
    prepare([str(tmp_path / "one.txt"), str(tmp_path / "two.txt")], str(corpus), val_fraction=0.0, quiet=True)
    index = CorpusIndex(corpus)
    for trial in range(5):
        text = "".join(rng.choice(list("abcdx \n"), 40)) + songs["two"][100 + trial : 160 + trial] + "xx"
        rows = {r.artist: r for r in index.check(text, max_span=50)}
        for name in ("one", "two"):
            assert rows[name].longest_span == _longest_common_substring(text, songs[name])
            assert rows[name].longest_text in text and rows[name].longest_text in songs[name]
            grams = [text[i : i + 8] for i in range(len(text) - 7)]
            share = sum(g in songs[name] for g in grams) / len(grams)
            assert rows[name].ngram_share == pytest.approx(share, abs=1e-4)
        assert rows["two"].warn and not rows["one"].warn


# ---- end to end ---------------------------------------------------------------------------------------------
BASE = ["--model.hidden_size=64", "--model.artist_embedding_dim=4", "--train.seq_len=32", "--train.batch_size=16"]
QUIET = ["--samples.enabled=false", "--train.log_every=1"]


def _first_loss(out_dir: Path) -> float:
    rows = [json.loads(l) for l in (out_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    return next(r["train_loss"] for r in rows if r.get("train_loss") is not None)


@pytest.fixture(scope="module")
def runs(demo_corpus, tmp_path_factory):
    """A conditioned base model on the demo corpus, and two fine-tunes (one with characters the base lacks)."""
    root = tmp_path_factory.mktemp("transfer")
    base = root / "base"
    metrics = train(tiny_config(demo_corpus, base, *BASE, *QUIET, "--train.max_steps=150", "--train.eval_every=150"))
    juniper = root / "corpus-juniper"
    prepare(["demo:juniper_vale"], str(juniper), quiet=True)
    lyrics = (resources.files("lyricdist") / "demo_corpus" / "juniper_vale.txt").read_text(encoding="utf-8")
    body = "\n".join(l for l in lyrics.lower().splitlines() if not l.startswith("#"))
    snow = root / "snowfolk.txt"
    snow.write_text(body.replace(" the ", f" {NEW_CHARS[0]} the ").replace("river", "rivØr") + "\n", encoding="utf-8")
    snow_corpus = root / "corpus-snow"
    prepare([str(snow)], str(snow_corpus), quiet=True)
    fine = ["--train.max_steps=30", "--train.lr=0.003", "--train.eval_every=30"]
    ft_juniper, ft_snow, scratch = root / "ft-juniper", root / "ft-snow", root / "scratch-snow"
    train(tiny_config(juniper, ft_juniper, *BASE, *QUIET, *fine, f"--train.init_from={base}"))
    train(tiny_config(snow_corpus, ft_snow, *BASE, *QUIET, *fine, f"--train.init_from={base}"))
    train(tiny_config(snow_corpus, scratch, *BASE, *QUIET, "--train.max_steps=1"))
    return {"base": base, "base_val": metrics["val_loss"], "juniper": ft_juniper, "snow": ft_snow, "scratch": scratch,
            "snow_corpus": snow_corpus, "root": root}


@pytest.mark.slow
def test_finetune_with_new_characters_starts_from_the_base_models_loss(runs):
    _, vocab, config = load_checkpoint(runs["snow"])
    assert NEW_CHARS[0] in vocab and "Ø" in vocab  # the characters new to the base model
    base_model, base_vocab, _ = load_checkpoint(runs["base"])
    assert set(base_vocab.chars) < set(vocab.chars)  # merged: nothing the base model knew was dropped
    ln_v = math.log(len(vocab))
    first, scratch_first = _first_loss(runs["snow"]), _first_loss(runs["scratch"])
    assert scratch_first > ln_v - 0.3  # from scratch: about ln(V)
    assert first < runs["base_val"] + 0.5 < scratch_first - 0.5
    # Sampling uses the merged vocabulary: a primetext with a new character continues.
    proc = run_cli("sample", str(runs["snow"]), "--primetext", f"{NEW_CHARS[0]} the", "--length", "40", "--json", "true")
    assert json.loads(proc.stdout)["text"].startswith(f"{NEW_CHARS[0]} the")


@pytest.mark.slow
def test_collab_alternate_labels_each_turn_and_is_deterministic(runs, tmp_path):
    out = tmp_path / "song.json"
    args = ["collab", str(runs["juniper"]), str(runs["snow"]), "--mode", "alternate", "--turns", "3", "--lines", "2"]
    proc = run_cli(*args, "--seed", "7", "--out", str(out))
    song = json.loads(out.read_text(encoding="utf-8"))
    assert song["mode"] == "alternate" and song["seed"] == 7
    assert song["authors"] == ["Juniper Vale", "snowfolk"]
    assert [s["author"] for s in song["segments"]] == ["Juniper Vale", "snowfolk", "Juniper Vale"]
    for s in song["segments"]:
        assert len([l for l in s["text"].splitlines() if l.strip()]) <= 2 and s["text"].endswith("\n")
    assert proc.stdout == format_song(song)
    assert proc.stdout.startswith("[Juniper Vale]\n") and "\n[snowfolk]\n" in proc.stdout
    settings = dict(turns=3, lines=2, seed=7)
    assert collab(str(runs["juniper"]), str(runs["snow"]), **settings) == song
    other = collab(str(runs["juniper"]), str(runs["snow"]), **{**settings, "seed": 8})
    assert other["segments"] != song["segments"]


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["product", "mixture"])
def test_collab_blend_draws_from_both_models(runs, rule):
    a, b = str(runs["juniper"]), str(runs["snow"])
    song = collab(a, b, mode="blend", rule=rule, alpha=0.5, turns=2, lines=2, seed=3)
    assert [s["author"] for s in song["segments"]] == ["Juniper Vale + snowfolk"]
    text = song["segments"][0]["text"]
    assert text.strip() and song["settings"]["rule"] == rule
    _, vocab_a, _ = load_checkpoint(a)
    _, vocab_b, _ = load_checkpoint(b)
    assert all(c in vocab_a and c in vocab_b for c in text)
    assert collab(a, b, mode="blend", rule=rule, alpha=0.5, turns=2, lines=2, seed=3) == song
    assert collab(a, b, mode="blend", rule=rule, alpha=0.9, turns=2, lines=2, seed=3) != song


@pytest.mark.slow
def test_collab_condition_interpolates_artists_of_one_model(runs, tmp_path):
    out = tmp_path / "cond.json"
    proc = run_cli(
        "collab", "juniper vale", "DJ Kilowatt", "--model", str(runs["base"]), "--mode", "condition",
        "--alpha", "0.3", "--lines", "3", "--turns", "1", "--seed", "1", "--out", str(out),
        "--check_memorization", "true",
    )
    song = json.loads(out.read_text(encoding="utf-8"))
    assert song["authors"] == ["Juniper Vale", "DJ Kilowatt"]
    assert proc.stdout.startswith("[Juniper Vale + DJ Kilowatt]\n")
    assert {r["artist"] for r in song["memorization"]["rows"]} == {"Juniper Vale", "DJ Kilowatt"}
    assert [s["author"] for s in song["memorization"]["segments"]] == ["Juniper Vale + DJ Kilowatt"]
    pure_a = collab("Juniper Vale", "DJ Kilowatt", mode="condition", model=str(runs["base"]), alpha=0.0, seed=1)
    pure_b = collab("Juniper Vale", "DJ Kilowatt", mode="condition", model=str(runs["base"]), alpha=1.0, seed=1)
    assert pure_a["segments"] != pure_b["segments"]
    bad = run_cli("collab", str(runs["juniper"]), str(runs["snow"]), "--mode", "condition", check=False)
    assert bad.returncode == 1 and "needs an artist-conditioned model" in bad.stderr
    bad = run_cli("collab", "Nobody", "DJ Kilowatt", "--model", str(runs["base"]), check=False)
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1 and "'Nobody'" in bad.stderr


@pytest.mark.slow
def test_memorisation_report_flags_a_model_that_recites_its_lyrics(runs):
    root = runs["root"]
    verse = (
        "the copper kettle sings at dawn across the frozen yard\n"
        "and every window holds a candle burning soft and hard\n"
        "we counted forty swallows on the wire above the mill\n"
        "and named them after sailors who went down beyond the hill\n"
    )
    (root / "verse.txt").write_text(verse * 4, encoding="utf-8")  # every training stream holds the whole verse
    prepare([str(root / "verse.txt")], str(root / "corpus-verse"), val_fraction=0.0, quiet=True)
    train(tiny_config(root / "corpus-verse", root / "parrot", "--model.hidden_size=96", "--train.batch_size=4",
                      "--train.seq_len=32", "--train.max_steps=200", "--train.eval_every=200",
                      "--train.log_every=100", "--samples.enabled=false"))
    proc = run_cli("sample", str(root / "parrot"), "--primetext", "the copper", "--argmax", "true", "--length", "150",
                   "--json", "true", "--check_memorization", "true")
    report = json.loads(proc.stdout)["memorization"]
    assert report[0]["artist"] == "verse" and report[0]["warn"]
    assert report[0]["longest_span"] >= 50 and report[0]["longest_text"] in verse
    assert "possible memorisation of verse" in proc.stderr
    # The base model, sampled at temperature 1, writes new lines rather than reciting.
    proc = run_cli("sample", str(runs["base"]), "--length", "150", "--json", "true", "--check_memorization", "true")
    rows = json.loads(proc.stdout)["memorization"]
    assert max(r["longest_span"] for r in rows) < report[0]["longest_span"] and not any(r["warn"] for r in rows)


@pytest.mark.slow
def test_sample_an_artist_or_a_mix_of_two(runs, capsys):
    base = str(runs["base"])
    kw = dict(primetext="the ", length=60, seed=3)
    juniper = [r.text for r in sample(base, artist="Juniper Vale", **kw)]
    assert juniper == [r.text for r in sample(base, artist="juniper vale", **kw)]  # same seed, same text
    assert juniper != [r.text for r in sample(base, artist="Juniper Vale", **{**kw, "seed": 4})]
    mix = dict(artist="Juniper Vale", artist_mix="DJ Kilowatt")
    assert [r.text for r in sample(base, **mix, alpha=0.0, **kw)] == juniper
    dj = [r.text for r in sample(base, artist="DJ Kilowatt", **kw)]
    assert [r.text for r in sample(base, **mix, alpha=1.0, **kw)] == dj
    halfway = [r.text for r in sample(base, **mix, alpha=0.5, **kw)]
    assert halfway != juniper and halfway != dj
    capsys.readouterr()
    unnamed = [r.text for r in sample(base, **kw)]  # no --artist: the mean embedding, and a warning
    assert "no --artist was given" in capsys.readouterr().err
    assert unnamed != juniper and unnamed != dj
    with pytest.raises(LyricdistError, match="alpha must be >= 0 and <= 1, got 1.5"):
        sample(base, **mix, alpha=1.5)
    with pytest.raises(LyricdistError, match="--artist_mix needs --artist"):
        sample(base, artist_mix="DJ Kilowatt")
    proc = run_cli("sample", base, "--primetext", "the ", "--length", "60", "--seed", "3", "--json", "true",
                   "--artist", "Juniper Vale", "--artist_mix", "DJ Kilowatt", "--alpha", "0.5",
                   "--check_memorization", "true", "--max_span", "1", "--max_ngram_share", "1.0")
    row = json.loads(proc.stdout)
    assert row["text"] == halfway[0]
    assert all(r["warn"] for r in row["memorization"])  # any copied character passes a max span of 1
    assert "thresholds 1 chars" in proc.stderr


@pytest.mark.slow
def test_sample_names_its_voice_and_starts_without_blank_lines(runs):
    base = str(runs["base"])
    rows = sample(base, artist="Juniper Vale", length=80, seed=1)
    assert rows[0].artist == "Juniper Vale" and rows[0].primetext == ""
    assert not rows[0].text.startswith("\n") and rows[0].text.strip()
    mix = sample(base, artist="Juniper Vale", artist_mix="DJ Kilowatt", alpha=0.25, length=10)[0]
    assert mix.artist == "0.75 Juniper Vale + 0.25 DJ Kilowatt"
    proc = run_cli("sample", base, "--artist", "DJ Kilowatt", "--length", "60", "--seed", "2")
    assert "writing as DJ Kilowatt" in proc.stderr and not proc.stdout.startswith("\n")


@pytest.mark.slow
def test_contrastive_guidance_moves_the_sample_away_from_the_other_artist(runs):
    base = str(runs["base"])
    kw = dict(primetext="the ", length=80, seed=5, artist="Juniper Vale")
    plain = sample(base, **kw)[0].text
    assert sample(base, **kw, against="DJ Kilowatt", guidance=0.0)[0].text == plain  # w = 0 is plain sampling
    guided = sample(base, **kw, against="DJ Kilowatt", guidance=3.0)[0]
    assert guided.text != plain and "guided away from DJ Kilowatt, w=3" in guided.artist
    # The guided distribution is (1 + w) lA - w lB: check one step against the model directly.
    model, vocab, config = load_checkpoint(base)
    ids = torch.tensor([vocab.encode("the ")])
    a, b = (model.artist_embed.weight[config["artists"].index(n)].detach() for n in ("Juniper Vale", "DJ Kilowatt"))
    with torch.no_grad():
        la = model(ids, artist_vec=a[None])[0][0, -1]
        lb = model(ids, artist_vec=b[None])[0][0, -1]
        want = torch.argmax(3 * la - 2 * lb).item()
    from lyricdist.generate import generate

    got = generate(model, vocab.encode("the "), 1, [1.0], argmax=True, artist_vec=a, against_vec=b, guidance=2.0)
    assert got[0][0] == want
    with pytest.raises(LyricdistError, match="--against needs --artist"):
        sample(base, against="DJ Kilowatt", guidance=1.0)
    song = collab("Juniper Vale", "DJ Kilowatt", model=base, turns=2, lines=2, seed=0, guidance=2.0)
    assert song["settings"]["guidance"] == 2.0
    assert [s["author"] for s in song["segments"]] == ["Juniper Vale", "DJ Kilowatt"]
    assert song != collab("Juniper Vale", "DJ Kilowatt", model=base, turns=2, lines=2, seed=0, guidance=0.0)
    with pytest.raises(LyricdistError, match="share one vocabulary"):
        collab(str(runs["base"]), str(runs["snow"]), guidance=1.0)
