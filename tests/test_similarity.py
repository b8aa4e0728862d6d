"""The siamese MaLSTM: weight tying, the exp(-L1) output, pair builders, the Last.fm reader, and an end-to-end
run on the demo corpus that must tell Juniper Vale's ballads from DJ Kilowatt's club chants on held-out songs."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import CONFIGS, run_cli
from lyricdist.errors import LyricdistError
from lyricdist.similarity.config import SimilarityDataConfig, SimilarityModelConfig
from lyricdist.similarity.model import MaLSTM
from lyricdist.similarity.pairs import artist_names, lastfm_pairs, load_songs, lyrics_pairs, read_lastfm
from lyricdist.similarity.tokenize import WordVocab, load_vectors
from lyricdist.sources import Song

LASTFM = Path(__file__).parent / "fixtures" / "lastfm"


def _batch(*lengths: int, vocab: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(2, vocab, (n,))
    return ids, torch.tensor(lengths)


def test_both_sides_share_one_encoder():
    torch.manual_seed(0)
    cfg = SimilarityModelConfig(embedding_dim=8, hidden_size=6, max_len=20)
    model = MaLSTM(cfg, vocab_size=30)
    lstm_params = 4 * 6 * (8 + 6 + 2)  # one LSTM layer: 4 gates x hidden x (input + hidden + 2 biases)
    assert sum(p.numel() for p in model.parameters()) == 30 * 8 + lstm_params
    a, la = _batch(5, 3, 7)
    b, lb = _batch(2, 9, 4)
    assert torch.allclose(model(a, la, b, lb), model(b, lb, a, la))  # symmetric: the same function on both sides
    assert torch.allclose(model(a, la, a, la), torch.ones(3))
    # Gradients from side b alone reach the one encoder that side a uses too.
    model(a, la, b, lb).sum().backward()
    grads_ab = model.encoder.weight_ih_l0.grad.clone()
    model.zero_grad()
    with torch.no_grad():
        h_a = model.encode(a, la)
    MaLSTM.similarity(h_a, model.encode(b, lb)).sum().backward()
    assert model.encoder.weight_ih_l0.grad.abs().sum() > 0
    assert not torch.allclose(grads_ab, model.encoder.weight_ih_l0.grad)  # side a contributed as well


def test_similarity_is_exp_minus_l1_in_zero_one():
    h = torch.full((1, 50), 0.999)
    far = MaLSTM.similarity(h, -h)  # the largest L1 distance two tanh-bounded 50-unit states can have
    assert 0 < far.item() < 1e-40
    h_a, h_b = torch.rand(64, 50) * 2 - 1, torch.rand(64, 50) * 2 - 1
    sim = MaLSTM.similarity(h_a, h_b)
    assert torch.allclose(sim, torch.exp(-(h_a - h_b).abs().sum(-1)))
    model = MaLSTM(SimilarityModelConfig(embedding_dim=4, hidden_size=50, max_len=10), vocab_size=20)
    out = model(*_batch(3, 10, 1, vocab=20), *_batch(10, 2, 6, vocab=20))
    assert ((out > 0) & (out <= 1)).all()


def _songs() -> list[Song]:
    songs = [Song(f"song {a} {k} words", artist=f"Artist {a}", title=f"T{k}") for a in "ABC" for k in range(10)]
    return songs + [Song("a lonely song", artist="Solo", title="Only")]


def test_lyrics_pairs_split_by_song_and_balanced():
    songs = _songs()
    cfg = SimilarityDataConfig(pairs_per_song=3, test_fraction=0.2, seed=5)
    ps = lyrics_pairs(songs, cfg)
    assert not set(ps.train_songs) & set(ps.test_songs)
    assert sorted(ps.train_songs + ps.test_songs) == list(range(len(songs)))
    for pairs, side in ((ps.train, set(ps.train_songs)), (ps.test, set(ps.test_songs))):
        assert all(a in side and b in side and a != b for a, b, _ in pairs)  # no pair reaches across the split
        counts = Counter(t for _, _, t in pairs)
        assert counts[1.0] == counts[0.0] > 0
        for a, b, t in pairs:
            assert (songs[a].artist == songs[b].artist) == (t == 1.0)
    assert {songs[i].artist for i in ps.test_songs} == {"Artist A", "Artist B", "Artist C"}
    assert lyrics_pairs(songs, cfg).train == ps.train  # the seed fixes split and draw
    spellings = [Song("x", artist="DJ K"), Song("y", artist="Dj K"), Song("z", artist="Ann")]
    assert artist_names(spellings) == ["Ann", "DJ K"]
    with pytest.raises(LyricdistError, match="two artists"):
        lyrics_pairs([s for s in songs if s.artist == "Artist A"], cfg)


def test_lastfm_reader_joins_on_normalised_artist_and_title():
    tracks = read_lastfm(LASTFM)
    assert len(tracks) == 10
    river = next(t for t in tracks if t.track_id == "TRAAB00V128F93A1C4")
    assert (river.artist, river.title) == ("JUNIPER VALE", "The River Keeps My Name (Live)")
    assert ["TRAAC00K128F93B2D5", 0.05] in [list(s) for s in river.similars]

    songs = load_songs(["demo"])
    ps = lastfm_pairs(songs, tracks, SimilarityDataConfig(test_fraction=0.5, seed=3))
    assert ps.info["join_rate"] == pytest.approx(0.8)  # all but the two "Nobody Known" tracks have demo lyrics
    matched = {songs[i].title for i in ps.train_songs + ps.test_songs}
    assert {"The River Keeps My Name", "Volts", "Turn It Up", "Three Two One Drop"} <= matched
    assert not set(ps.train_songs) & set(ps.test_songs)
    for pairs, side in ((ps.train, set(ps.train_songs)), (ps.test, set(ps.test_songs))):
        assert all(a in side and b in side for a, b, _ in pairs)
        listed = [p for p in pairs if p[2] > 0]
        assert len(pairs) == 2 * len(listed)  # as many unlisted negatives as listed pairs
        assert len({(a, b) for a, b, _ in pairs}) == len(pairs)
    by_title = {(songs[a].title, songs[b].title): t for a, b, t in ps.train + ps.test}
    river_kilowatt = by_title.get(("The River Keeps My Name", "Turn It Up"))
    assert river_kilowatt in (None, 0.05)  # the listed score is the target (None: split apart)


def test_lastfm_reader_rejects_a_broken_file(tmp_path):
    (tmp_path / "A").mkdir()
    (tmp_path / "A" / "TRBROKEN.json").write_text('{"artist": "X", "similars": []}')
    with pytest.raises(LyricdistError, match="TRBROKEN.json is not a Last.fm track file"):
        read_lastfm(tmp_path)
    with pytest.raises(LyricdistError, match="no Last.fm JSON files"):
        read_lastfm(tmp_path / "empty")


def test_vocab_unknown_words_and_local_vectors(tmp_path):
    vocab = WordVocab.build(["the river keeps my name", "the river rolls"], min_count=1)
    assert vocab.encode("The RIVER sings", 10) == [vocab._index["the"], vocab._index["river"], 1]
    assert vocab.encode("", 10) == [1]
    vectors = tmp_path / "glove.txt"
    vectors.write_text("river 1 2 3\nRiver 9 9 9\nzebra 4 5 6\n")
    weight, found = load_vectors(vectors, vocab, dim=3)
    assert found == 1 and weight[vocab._index["river"]].tolist() == [1, 2, 3] and weight[0].abs().sum() == 0
    with pytest.raises(LyricdistError, match="embedding-dim 3"):
        load_vectors(vectors, vocab, dim=4)



def test_vectors_whose_token_contains_spaces(tmp_path):
    """GloVe-840B has tokens like ". . ." and "at name@domain.com": a line's vector is its last `dim` fields."""
    vocab = WordVocab.build(["the river rolls"], min_count=1)
    vectors = tmp_path / "glove.840B.300d.txt"
    vectors.write_text("river 1 2 3\n. . . 0.1 0.2 0.3\nat name@domain.com 4 5 6\nrolls 7 8 9\n")
    weight, found = load_vectors(vectors, vocab, dim=3)
    assert found == 2 and weight[vocab._index["rolls"]].tolist() == [7, 8, 9]
    with pytest.raises(LyricdistError, match="embedding-dim 3"):  # a longer vector than the model takes
        load_vectors(vectors, vocab, dim=2)


@pytest.mark.slow
def test_demo_end_to_end_separates_the_two_artists(tmp_path):
    out = tmp_path / "run"
    run_cli("similarity", "train", "--config", str(CONFIGS / "similarity-tiny.yaml"), f"--train.out_dir={out}")
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in rows if r.get("test_accuracy") is not None][-1]
    # Held-out songs only (split by song); chance is 0.5 on these balanced pairs.
    assert final["test_accuracy"] >= 0.75, final

    before = (out / "metrics.jsonl").read_text()
    shown = run_cli("similarity", "eval", str(out), "--metrics", str(tmp_path / "eval.jsonl")).stdout
    assert "2-class accuracy" in shown and "Spearman" in shown
    assert (out / "metrics.jsonl").read_text() == before  # a reader never writes into the run
    evaluated = json.loads((tmp_path / "eval.jsonl").read_text().splitlines()[-1])
    assert evaluated["stage"] == "eval" and evaluated["test_accuracy"] == pytest.approx(final["test_accuracy"])
    assert evaluated["test_pairs"] == final["test_pairs"]

    test_songs = json.loads((out / "test_set.json").read_text())["songs"]
    segments = [{"author": s["artist"], "text": s["text"][:300]} for s in test_songs]
    collab = tmp_path / "collab.json"
    collab.write_text(json.dumps({"authors": ["Juniper Vale", "DJ Kilowatt"], "segments": segments}))
    run_cli("similarity", "score", str(out), str(collab), f"--out={tmp_path / 'score.json'}")
    scored = json.loads((tmp_path / "score.json").read_text())
    assert len(scored["segments"]) == len(segments)
    assert scored["attribution_accuracy"] >= 0.75, scored["attribution_accuracy"]
    ballad = tmp_path / "ballad.txt"
    ballad.write_text(next(s["text"] for s in test_songs if s["artist"] == "Juniper Vale"))
    nearest = run_cli("similarity", "score", str(out), str(ballad)).stdout.splitlines()
    assert nearest[0].endswith("Juniper Vale")

    png = tmp_path / "plot" / "songs.png"
    run_cli("similarity", "embed", str(out), f"--out={png}", "--tracking.backend=wandb")  # offline (conftest)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((png.parent / "wandb").glob("offline-run-*"))
    points = json.loads(png.with_suffix(".json").read_text())["songs"]
    assert Counter(p["artist"] for p in points) == Counter({"DJ Kilowatt": 50, "Juniper Vale": 32})


def test_lastfm_training_reports_the_join_rate(tmp_path):
    proc = run_cli(
        "similarity", "train", "--config", str(CONFIGS / "similarity-tiny.yaml"), f"--train.out_dir={tmp_path}",
        f"--data.lastfm={LASTFM}", "--data.test_fraction=0.5", "--train.epochs=1",
    )
    assert "Last.fm join: 8 of 10 tracks have lyrics (80.0%)" in proc.stdout
    assert json.loads((tmp_path / "pairs_info.json").read_text())["matched_tracks"] == 8
    assert (tmp_path / "checkpoints" / "last" / "model.safetensors").is_file()


def test_bad_settings_are_one_line_errors(tmp_path):
    proc = run_cli("similarity", "train", "--config", str(CONFIGS / "similarity-tiny.yaml"),
                   f"--train.out_dir={tmp_path}", "--train.word_dropout=1.5", check=False)
    assert proc.returncode == 2 and 'Parser key "train.word_dropout"' in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    notes = tmp_path / "notes.txt"
    notes.write_text("one continuous text, no artists\n")
    proc = run_cli("similarity", "train", f"--train.out_dir={tmp_path}", f"--data.sources=[text:{notes}]",
                   check=False)
    assert proc.returncode == 1 and "needs songs with artists" in proc.stderr
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
def test_two_process_ddp_training(tmp_path):
    """Two CPU processes (gloo) share the pairs; the held-out metrics count every test pair exactly once."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "lyricdist",
         "similarity", "train", "--config", str(CONFIGS / "similarity-tiny.yaml"), f"--train.out_dir={tmp_path}",
         "--train.epochs=2"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("final: test accuracy") == 1  # printed by the main process only
    test_pairs = len(json.loads((tmp_path / "test_set.json").read_text())["pairs"])
    final = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()][-1]
    assert final["test_pairs"] == test_pairs
    assert (tmp_path / "checkpoints" / "last" / "model.safetensors").is_file()


@pytest.fixture(scope="module")
def similarity_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("similarity") / "run"
    run_cli("similarity", "train", "--config", str(CONFIGS / "similarity-tiny.yaml"), f"--train.out_dir={out}",
            "--train.epochs=2")
    return out


@pytest.mark.slow
def test_score_attributes_only_single_author_segments_of_real_collab_output(
    similarity_run, demo_corpus, tmp_path
):
    """Real `lyricdist collab` JSON: a primetext segment, blend's one "A + B" part, a run-folder label and a
    "X (B)" label are scored without error; only segments by one known author count towards the accuracy."""
    from conftest import tiny_config
    from lyricdist.prepare import prepare
    from lyricdist.similarity.score import score
    from lyricdist.train import train

    runs = {}
    for artist, source in (("juniper", "demo:juniper_vale"), ("dj", "demo:dj_kilowatt"), ("both-artists", None)):
        corpus = demo_corpus
        if source:
            corpus = tmp_path / f"corpus-{artist}"
            prepare([source], str(corpus), quiet=True)
        runs[artist] = tmp_path / artist
        train(tiny_config(corpus, runs[artist], "--train.max_steps=2", "--samples.enabled=false"))

    def collab_json(name: str, a: str, b: str, *args: str) -> Path:
        out = tmp_path / f"{name}.json"
        run_cli("collab", str(runs[a]), str(runs[b]), "--turns", "3", "--lines", "1", *args, "--out", str(out))
        return out

    alternate = collab_json("alternate", "juniper", "dj", "--primetext", "the night\n")
    shown = run_cli("similarity", "score", str(similarity_run), str(alternate), f"--out={tmp_path / 's.json'}")
    result = json.loads((tmp_path / "s.json").read_text())
    assert [r["author"] for r in result["segments"]] == ["primetext", "Juniper Vale", "DJ Kilowatt", "Juniper Vale"]
    assert [r["matches_author"] is None for r in result["segments"]] == [True, False, False, False]
    assert result["attributed_segments"] == 3 and result["unknown_authors"] == []
    matches = [r["matches_author"] for r in result["segments"][1:]]
    assert result["attribution_accuracy"] == pytest.approx(sum(matches) / 3)
    assert all(set(r["similarity"]) == {"Juniper Vale", "DJ Kilowatt"} for r in result["segments"])
    assert "(not attributed)" in shown.stdout and "of 3" in shown.stdout

    blend = score(str(similarity_run), str(collab_json("blend", "juniper", "dj", "--mode", "blend")))
    [part] = blend["segments"]
    assert part["author"] == "Juniper Vale + DJ Kilowatt" and part["matches_author"] is None
    assert part["closer_to"] in ("Juniper Vale", "DJ Kilowatt") and len(part["similarity"]) == 2
    assert blend["attributed_segments"] == 0 and blend["attribution_accuracy"] is None

    same = score(str(similarity_run), str(collab_json("same", "juniper", "juniper")))
    assert same["authors"] == ["Juniper Vale", "Juniper Vale (B)"] and same["unknown_authors"] == []
    assert same["attributed_segments"] == 3 and same["attribution_accuracy"] == 1.0  # both labels are one artist

    folder = collab_json("folder", "both-artists", "dj")  # a two-artist model is labelled by its run folder
    shown = run_cli("similarity", "score", str(similarity_run), str(folder)).stdout
    result = score(str(similarity_run), str(folder))
    assert result["authors"] == ["both-artists", "DJ Kilowatt"] and result["unknown_authors"] == ["both-artists"]
    assert result["attributed_segments"] == 1 and result["segments"][1]["matches_author"] is not None
    assert "no reference songs for 'both-artists'" in shown


def test_bf16_training_keeps_fp32_masters_in_the_checkpoint(tmp_path, force_bf16, capsys):
    """The similarity trainer follows the generator's precision rule: a bf16 encoder trains fp32 masters, and the
    checkpoint holds those, not the bf16 weights (bf16 forced: on every CPU, fused or not)."""
    from lyricdist.similarity import load_config
    from lyricdist.similarity.train import train as similarity_train

    similarity_train(load_config(CONFIGS / "similarity-tiny.yaml", [f"--train.out_dir={tmp_path}", "--train.epochs=2",
                                                                    "--train.mixed_precision=bf16"]))
    assert "precision: RNN in bf16" in capsys.readouterr().out
    state = load_file(str(tmp_path / "checkpoints" / "last" / "model.safetensors"))
    w = state["encoder.weight_hh_l0"]
    assert w.dtype == torch.float32 and not torch.equal(w, w.bfloat16().float())


def test_unpacked_encoder_equals_the_packed_final_state():
    """Reading each text's state at its last word is the packed run's final state (without its CPU cost)."""
    from torch.nn.utils.rnn import pack_padded_sequence

    torch.manual_seed(0)
    model = MaLSTM(SimilarityModelConfig(embedding_dim=8, hidden_size=6), vocab_size=30)
    ids, lengths = _batch(7, 3, 12, 1)
    packed = pack_padded_sequence(model.embedding(ids), lengths, batch_first=True, enforce_sorted=False)
    _, (h, _) = model.encoder(packed)
    torch.testing.assert_close(model.encode(ids, lengths), h[-1])


def test_ngram_features_are_stable_hashed_ngrams_of_each_line():
    from lyricdist.similarity.ngram import NgramFeatures

    f = NgramFeatures(buckets=1 << 16, char_min=2, char_max=3, word_ngrams=2)
    line = f.line("Dil Se re")
    # words 3 + bigrams 2 + char 2-grams of " dil se re " (11 characters: 10) + 3-grams (9)
    assert len(line) == 3 + 2 + 10 + 9 and line.max() < 1 << 16
    assert list(f.line("dil se re")) == list(line)  # lowercased; crc32, so the same ids in every process
    text = "dil se re\n\nchaiyya chaiyya\n"
    assert [len(x) for x in f.lines(text)] == [len(f.line("dil se re")), len(f.line("chaiyya chaiyya"))]
    assert list(f.encode(text)) == list(np.concatenate(f.lines(text)))
    assert NgramFeatures.from_json(f.to_json()).to_json() == f.to_json()
    assert set(f.line("tum")) != set(f.line("ham"))


def test_ngram_siamese_shares_one_encoder_and_scores_in_zero_one():
    from lyricdist.similarity.ngram import NgramFeatures, NgramSiamese, bags

    cfg = SimilarityModelConfig(kind="ngram", embedding_dim=8, hidden_size=4, buckets=1024)
    f = NgramFeatures.from_config(cfg)
    model = NgramSiamese(cfg, len(f))
    texts = ["mere sapnon ki rani\n", "tujhse naraz nahin zindagi\n"]
    ids, offsets = bags([f.encode(t) for t in texts + texts[::-1]])
    sim = model(ids, offsets)
    assert sim.shape == (2,) and torch.all((sim > 0) & (sim <= 1))
    same_ids, same_off = bags([f.encode(texts[0])] * 2)
    assert model(same_ids, same_off).item() == pytest.approx(1.0)  # tied weights: a text is its own twin
    assert [p for p in model.parameters() if p.dim() == 2][0].shape == (1024, 8)  # one table for both sides


def test_validation_songs_are_set_aside_from_training(tmp_path):
    songs = [Song(text=f"song {i} words here", artist=("a", "b")[i % 2], title=str(i)) for i in range(40)]
    cfg = SimilarityDataConfig(sources=["unused"], pairs_per_song=2, test_fraction=0.2, val_fraction=0.25)
    ps = lyrics_pairs(songs, cfg)
    assert ps.val_songs and not set(ps.val_songs) & (set(ps.train_songs) | set(ps.test_songs))
    assert len(ps.val_songs) + len(ps.train_songs) + len(ps.test_songs) == 40
    assert all(a in ps.val_songs and b in ps.val_songs for a, b, _ in ps.val)
    fixed = lyrics_pairs(songs, cfg, split=(list(range(30)), list(range(30, 40))))
    assert set(fixed.test_songs) == set(range(30, 40)) and set(fixed.train_songs) | set(fixed.val_songs) == set(range(30))
    none = lyrics_pairs(songs, SimilarityDataConfig(sources=["unused"], pairs_per_song=2))
    assert none.val == [] and none.val_songs == []


def test_ngram_model_end_to_end_keeps_its_best_checkpoint(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("similarity", "train", "--config", str(CONFIGS / "similarity-ngram.yaml"), f"--train.out_dir={out}",
                   "--train.epochs=3", "--model.buckets=16384", "--data.pairs_per_song=8")
    assert "final: test accuracy" in proc.stdout
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "val_accuracy" in r]
    assert len(evals) == 3 and all(0 <= r["val_segment_accuracy"] <= 1 for r in evals)
    best_epoch = max(evals, key=lambda r: ((r["val_accuracy"] + r["val_segment_accuracy"]), -r["epoch"]))["epoch"]
    best = json.loads((out / "checkpoints" / "best" / "config.json").read_text())
    assert best["epoch"] == best_epoch and best["model"]["kind"] == "ngram"
    assert json.loads((out / "checkpoints" / "last" / "config.json").read_text())["epoch"] == 3
    evaluated = run_cli("similarity", "eval", str(out)).stdout  # reads checkpoints/best
    accuracy = float(evaluated.split("2-class accuracy")[1].split("%")[0]) / 100
    assert accuracy >= 0.8, evaluated
    test_songs = json.loads((out / "test_set.json").read_text())["songs"]
    ballad = tmp_path / "ballad.txt"
    ballad.write_text(next(s["text"] for s in test_songs if s["artist"] == "Juniper Vale"))
    nearest = run_cli("similarity", "score", str(out), str(ballad)).stdout.splitlines()
    assert nearest[0].endswith("Juniper Vale")
