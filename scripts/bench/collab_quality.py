"""Collaboration quality: does a two-artist song read like both artists? One table for the whole mission.

    python scripts/bench/collab_quality.py                # Anand Bakshi vs Gulzar (lyricists), ../shared giitaayan
    python scripts/bench/collab_quality.py --quick        # the bundled demo corpus, seconds (run by the tests)
    python scripts/bench/collab_quality.py --source demo --artists "Juniper Vale" "DJ Kilowatt" --steps 300

Stages, each timed:
  1. prepare   the two artists' songs -> a corpus (`lyricdist prepare`; 10% of each artist's songs held out).
  2. judge     an independent attribution baseline: TF-IDF over character 2-5-grams and words + logistic regression
               (scikit-learn, a benchmark-only dependency), trained on the corpus's training songs; accuracy on
               the held-out songs and on their 4-line segments.
  3. similarity  the siamese n-gram model (configs/similarity-ngram.yaml) trained on the same training songs:
               same/different-artist accuracy on held-out song pairs (the paper's 2-class figure), attribution of
               held-out songs and 4-line segments (the artist whose training songs are most similar on average).
  4. generator an artist-conditioned char-LSTM (`lyricdist train`, configs/bollywood-collab.yaml unless --quick):
               validation nats/char with each song's own artist and with the other's (the artist-swap gap).
  5. collab    `lyricdist collab` in every mode over --seeds seeds: alternate (plain, and with contrastive guidance
               w = --guidance), blend (product rule), condition (alpha 0.5). Single-author segments of alternate are
               attributed by the similarity model and by the judge; blend/condition output is scored as a mixture
               (the judge's P(artist A) and where it sits between the two artists' real held-out songs, 0 = like
               B's, 1 = like A's). Copying in words: word 5-grams and the longest copied word span of each author's
               segments against that artist's training text, next to the same figures for its real held-out songs.

Targets (issue 13): similarity >= judge on held-out songs and segments and >= 96.2% on pairs; generated
single-author segments attributed by the judge at least as often as real held-out 4-line segments; generated text
copying no more than real held-out songs do.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
GIITAAYAN = REPO.parent / "shared" / "data" / "giitaayan-isb.tar.gz"
DEFAULT_ARTISTS = ("Anand Bakshi", "Gulzar")
SEGMENT_LINES = 4


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---- data ----------------------------------------------------------------------------------------------------
def corpus_songs(corpus_dir: Path, split: str) -> list[tuple[str, str]]:
    """(artist, text) of every song of a prepared corpus's split, in the corpus's order."""
    from lyricdist.data import Corpus

    corpus = Corpus(corpus_dir)
    tokens = np.asarray(corpus.tokens(split))
    starts, ids = corpus.doc_artist_ids(split)
    ends = np.append(starts[1:], len(tokens))
    return [(corpus.artists[a], corpus.vocab.decode(tokens[s:e])) for s, e, a in zip(starts, ends, ids)]


def segments(text: str, n: int = SEGMENT_LINES) -> list[str]:
    """Consecutive non-overlapping n-line segments of the text's non-blank lines (a shorter song: one segment)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) <= n:
        return ["\n".join(lines) + "\n"] if lines else []
    return ["\n".join(lines[i : i + n]) + "\n" for i in range(0, len(lines) - n + 1, n)]


# ---- the judge -----------------------------------------------------------------------------------------------
def train_judge(texts: list[str], labels: list[str]):
    """TF-IDF over character 2-5-grams and words, logistic regression (balanced classes)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    judge = make_pipeline(
        make_union(TfidfVectorizer(analyzer="char", ngram_range=(2, 5), sublinear_tf=True, min_df=2),
                   TfidfVectorizer(analyzer="word", ngram_range=(1, 1), sublinear_tf=True)),
        LogisticRegression(C=10.0, max_iter=2000, class_weight="balanced"),
    )
    return judge.fit(texts, labels)


def judge_accuracy(judge, texts: list[str], labels: list[str]) -> float:
    return float(np.mean(judge.predict(texts) == np.asarray(labels))) if texts else float("nan")


# ---- similarity ----------------------------------------------------------------------------------------------
def train_similarity(args, train_songs, val_songs, out_dir: Path) -> tuple[dict, object]:
    from lyricdist.similarity import load_config
    from lyricdist.similarity.pairs import lyrics_pairs
    from lyricdist.similarity.train import train
    from lyricdist.sources import Song

    overrides = [f"--train.out_dir={out_dir}", "--tracking.backend=none", "--train.cpu=true"]
    if args.quick:
        overrides += ["--train.epochs=3", "--model.buckets=16384", "--data.pairs_per_song=8"]
    if args.similarity_epochs:
        overrides += [f"--train.epochs={args.similarity_epochs}"]
    cfg = load_config(REPO / "configs" / "similarity-ngram.yaml", overrides)
    songs = [Song(text=t, artist=a, title=f"{a} {k}") for k, (a, t) in enumerate(train_songs + val_songs)]
    split = (list(range(len(train_songs))), list(range(len(train_songs), len(songs))))
    pairs = lyrics_pairs(songs, cfg.data, split=split)
    metrics = train(cfg, pairs)
    return metrics, out_dir


def similarity_attribution(ckpt_dir: Path, texts: list[str]) -> tuple[list[str], np.ndarray, list[str]]:
    """(closest artist per text, [texts, artists] mean similarity, artist names)."""
    from lyricdist.similarity.checkpoint import encode_texts, load_similarity_checkpoint
    from lyricdist.similarity.score import References

    model, vocab, config, stored = load_similarity_checkpoint(ckpt_dir)
    refs = References(config["artists"], stored["vectors"], stored["artist_ids"])
    scores = refs.artist_scores(encode_texts(model, vocab, texts)).numpy()
    return [refs.artists[k] for k in scores.argmax(1)], scores, list(refs.artists)


# ---- generator -----------------------------------------------------------------------------------------------
def train_generator(args, corpus: Path, out_dir: Path) -> None:
    config = REPO / "configs" / ("tiny.yaml" if args.quick else "bollywood-collab.yaml")
    overrides = [f"--data.corpus={corpus}", f"--train.out_dir={out_dir}", "--tracking.backend=none",
                 "--samples.enabled=false", f"--train.cpu={str(args.device == 'cpu').lower()}"]
    if args.quick:
        overrides += ["--model.artist_embedding_dim=4", "--train.max_steps=60", "--train.eval_every=60"]
    if args.steps and not args.quick:
        overrides += [f"--train.max_steps={args.steps}", f"--train.eval_every={args.steps}"]
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-m", "lyricdist", "train", "--config", str(config), *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"generator training failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")


def swap_losses(ckpt: Path, songs: list[tuple[str, str]], device: str, guidance: list[float]) -> tuple[float, float, dict]:
    """Validation nats/char of every held-out song with its own artist's embedding and with the other artist's,
    and with its own artist guided away from the other ((1 + w) l_own - w l_other, per w): what guidance costs in
    likelihood of the artist's real songs."""
    import torch
    import torch.nn.functional as F

    from lyricdist.checkpoint import load_checkpoint

    model, vocab, config = load_checkpoint(str(ckpt), device=device)
    model.eval()
    artists = config.get("artists", [])
    own = other = 0.0
    guided = {w: 0.0 for w in guidance}
    n = 0
    with torch.no_grad():
        for artist, text in songs:
            ids = torch.tensor([vocab.encode(text)], device=device)
            if ids.shape[1] < 2:
                continue
            a = artists.index(artist)
            b = next(k for k in range(len(artists)) if k != a)
            la = model(ids[:, :-1], artist=torch.tensor([a], device=device))[0][0].float()
            lb = model(ids[:, :-1], artist=torch.tensor([b], device=device))[0][0].float()
            own += F.cross_entropy(la, ids[0, 1:], reduction="sum").item()
            other += F.cross_entropy(lb, ids[0, 1:], reduction="sum").item()
            for w in guidance:
                guided[w] += F.cross_entropy((1 + w) * la - w * lb, ids[0, 1:], reduction="sum").item()
            n += ids.shape[1] - 1
    return own / n, other / n, {w: v / n for w, v in guided.items()}


# ---- the run -------------------------------------------------------------------------------------------------
def run(args) -> dict:
    from lyricdist.collab import collab
    from lyricdist.memorization import CorpusIndex
    from lyricdist.prepare import prepare

    out = Path(args.out or tempfile.mkdtemp(prefix="collab_quality_"))
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    a_name, b_name = args.artists

    tic = time.perf_counter()
    options = {"artist_field": args.artist_field} if args.artist_field and args.source != "demo" else {}
    corpus = out / "corpus"
    prepare([args.source], str(corpus), artists=[a_name, b_name], max_songs_per_artist=args.max_songs_per_artist,
            overwrite=True, source_options=options, quiet=True, val_fraction=0.1)
    train_songs, val_songs = corpus_songs(corpus, "train"), corpus_songs(corpus, "val")
    times["prepare"] = time.perf_counter() - tic
    counts = {n: (sum(a == n for a, _ in train_songs), sum(a == n for a, _ in val_songs)) for n in (a_name, b_name)}
    log(f"corpus: {counts} (train, held-out) songs")
    val_segs = [(a, s) for a, t in val_songs for s in segments(t)]

    tic = time.perf_counter()
    judge = train_judge([t for _, t in train_songs], [a for a, _ in train_songs])
    judge_songs = judge_accuracy(judge, [t for _, t in val_songs], [a for a, _ in val_songs])
    judge_segs = judge_accuracy(judge, [t for _, t in val_segs], [a for a, _ in val_segs])
    times["judge"] = time.perf_counter() - tic
    log(f"judge: held-out songs {judge_songs:.1%}, segments {judge_segs:.1%}")

    tic = time.perf_counter()
    if args.similarity:  # a model trained on this corpus's training songs before: its saved held-out metrics
        from lyricdist.similarity.checkpoint import checkpoint_dir

        sim_dir = Path(args.similarity)
        sim_metrics = json.loads((checkpoint_dir(sim_dir) / "config.json").read_text())["metrics"]
    else:
        sim_metrics, sim_dir = train_similarity(args, train_songs, val_songs, out / "similarity")
    sim_pred, _, _ = similarity_attribution(sim_dir, [t for _, t in val_songs])
    sim_songs = float(np.mean([p == a for p, (a, _) in zip(sim_pred, val_songs)]))
    seg_pred, _, _ = similarity_attribution(sim_dir, [t for _, t in val_segs])
    sim_segs = float(np.mean([p == a for p, (a, _) in zip(seg_pred, val_segs)]))
    times["similarity"] = time.perf_counter() - tic
    log(f"similarity: pairs {sim_metrics['test_accuracy']:.1%}, songs {sim_songs:.1%}, segments {sim_segs:.1%}")

    tic = time.perf_counter()
    gen_dir = out / "generator"
    if args.generator:
        gen_dir = Path(args.generator)
    else:
        train_generator(args, corpus, gen_dir)
    times["generator"] = time.perf_counter() - tic
    own, other, guided_nats = swap_losses(gen_dir, val_songs, args.device, args.guidance)
    log(f"generator: val {own:.3f} nats/char, with the other artist {other:.3f} (+{other - own:.3f})")

    tic = time.perf_counter()
    modes = [("alternate", 0.0), *(("alternate", w) for w in args.guidance), ("blend", 0.0), ("condition", 0.0)]
    songs_out = []
    for mode, w in modes:
        for seed in range(args.seeds):
            song = collab(a_name, b_name, mode=mode, model=str(gen_dir), turns=args.turns, lines=args.lines,
                          temperature=args.temperature, seed=seed, device=args.device, guidance=w)
            songs_out.append({"mode": mode, "guidance": w, "seed": seed, "segments": song["segments"]})
    times["collab"] = time.perf_counter() - tic

    tic = time.perf_counter()
    real_p = judge.predict_proba([t for _, t in val_songs])[:, list(judge.classes_).index(a_name)]
    real_a = float(np.mean([p for p, (a, _) in zip(real_p, val_songs) if a == a_name]))
    real_b = float(np.mean([p for p, (a, _) in zip(real_p, val_songs) if a == b_name]))
    index = CorpusIndex(corpus)
    rows = {}
    for mode, w in modes:
        key = f"{mode}" + (f" w={w:g}" if mode == "alternate" and w else "")
        group = [s for s in songs_out if s["mode"] == mode and s["guidance"] == w]
        segs = [seg for s in group for seg in s["segments"]]
        if mode == "alternate":
            texts, authors = [g["text"] for g in segs], [g["author"] for g in segs]
            judged = judge.predict(texts)
            sim_by, _, _ = similarity_attribution(sim_dir, texts)
            copying = {}
            for name in (a_name, b_name):
                text = "".join(t for t, au in zip(texts, authors) if au == name)
                row = next(asdict(r) for r in index.check(text) if r.artist == name)
                copying[name] = {k: row[k] for k in ("word_ngram_share", "longest_word_span", "heldout_word_ngram_share",
                                                     "heldout_longest_word_span_p90", "warn")}
            rows[key] = {
                "segments": len(texts),
                "judge_attribution": float(np.mean(judged == np.asarray(authors))),
                "similarity_attribution": float(np.mean([p == au for p, au in zip(sim_by, authors)])),
                "copying": copying,
            }
        else:
            texts = [g["text"] for g in segs]
            p = judge.predict_proba(texts)[:, list(judge.classes_).index(a_name)]
            _, sims, names = similarity_attribution(sim_dir, texts)
            position = (p - real_b) / (real_a - real_b) if real_a != real_b else p * np.nan
            rows[key] = {
                "texts": len(texts),
                "judge_p_a": float(p.mean()),
                "position": float(np.mean(position)),
                "similarity": {n: float(sims[:, k].mean()) for k, n in enumerate(names)},
            }
    times["scoring"] = time.perf_counter() - tic
    result = {
        "source": args.source, "artists": [a_name, b_name], "artist_field": args.artist_field, "songs": counts,
        "generator_val_nats": own, "generator_swap_nats": other, "swap_gap": other - own,
        "generator_guided_val_nats": {f"{w:g}": v for w, v in guided_nats.items()},
        "judge_songs": judge_songs, "judge_segments": judge_segs,
        "similarity_pairs": sim_metrics["test_accuracy"], "similarity_songs": sim_songs,
        "similarity_segments": sim_segs, "heldout_segments": len(val_segs), "heldout_songs": len(val_songs),
        "judge_real_p_a": {a_name: real_a, b_name: real_b},
        "collab": rows, "seconds": times, "settings": {k: v for k, v in vars(args).items()},
        "samples": songs_out[:: max(args.seeds, 1)],
    }
    (out / "collab_quality.json").write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")
    return result


def table(r: dict) -> str:
    a, b = r["artists"]
    pct = lambda x: f"{x:.1%}"  # noqa: E731
    lines = [f"## collab_quality: {a} vs {b} ({r['source']}; held-out: {r['heldout_songs']} songs, "
             f"{r['heldout_segments']} {SEGMENT_LINES}-line segments)", "",
             "| measure | lyricdist | reference |", "|---|---|---|",
             f"| generator val loss (own artist) | {r['generator_val_nats']:.3f} nats/char | — |",
             f"| artist-swap gap (val loss with the other artist) | +{r['swap_gap']:.3f} nats/char | — |",
             *(f"| val loss guided away from the other artist, w={w} | {v:.3f} nats/char | unguided "
               f"{r['generator_val_nats']:.3f} |" for w, v in r["generator_guided_val_nats"].items()),
             f"| similarity: held-out pairs, 2-class | {pct(r['similarity_pairs'])} | paper 96.2% |",
             f"| similarity: held-out songs attributed | {pct(r['similarity_songs'])} | judge {pct(r['judge_songs'])} |",
             f"| similarity: held-out {SEGMENT_LINES}-line segments attributed | {pct(r['similarity_segments'])} | "
             f"judge {pct(r['judge_segments'])} |"]
    for key, row in r["collab"].items():
        if "judge_attribution" in row:
            lines.append(f"| collab {key}: single-author segments attributed by the judge | "
                         f"{pct(row['judge_attribution'])} of {row['segments']} | real segments "
                         f"{pct(r['judge_segments'])} |")
            lines.append(f"| collab {key}: ... by the similarity model | {pct(row['similarity_attribution'])} | "
                         f"real segments {pct(r['similarity_segments'])} |")
            for name, c in row["copying"].items():
                ref = (f"{pct(c['heldout_word_ngram_share'])}, p90 {c['heldout_longest_word_span_p90']:g} words"
                       if c["heldout_word_ngram_share"] is not None else "n/a")
                lines.append(f"| collab {key}: {name} copying (word 5-grams, longest word span) | "
                             f"{pct(c['word_ngram_share'])}, {c['longest_word_span']} words"
                             f"{' (warn)' if c['warn'] else ''} | real held-out songs {ref} |")
        else:
            sims = ", ".join(f"{n} {v:.3f}" for n, v in row["similarity"].items())
            real = r["judge_real_p_a"]
            lines.append(f"| collab {key}: judge P({a}); position 0 = {b}, 1 = {a} | {row['judge_p_a']:.2f}; "
                         f"{row['position']:.2f} | real songs {real[a]:.2f} / {real[b]:.2f} |")
            lines.append(f"| collab {key}: similarity to each artist | {sims} | — |")
    secs = ", ".join(f"{k} {v:.0f}s" for k, v in r["seconds"].items())
    lines += ["", f"wall time: {secs}; total {sum(r['seconds'].values()):.0f}s"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the bundled demo corpus, tiny models (the CI smoke run)")
    p.add_argument("--source", default=None, help="any `lyricdist prepare` songs source (default: ../shared giitaayan)")
    p.add_argument("--artists", nargs=2, default=None, metavar=("A", "B"), help="the two artists")
    p.add_argument("--artist-field", default="lyricist", help="giitaayan: lyricist, singer, music or film")
    p.add_argument("--max-songs-per-artist", type=int, default=400, help="a random subset of each artist's songs")
    p.add_argument("--steps", type=int, default=300,
                   help="generator training steps (0: the config's 1000; 300 took 17 min on 2 busy CPU cores)")
    p.add_argument("--generator", default=None, help="an artist-conditioned checkpoint to use instead of training one")
    p.add_argument("--similarity-epochs", type=int, default=0, help="similarity epochs (default: the config's)")
    p.add_argument("--similarity", default=None,
                   help="a similarity run trained by an earlier run of this benchmark on the same corpus, reused")
    p.add_argument("--seeds", type=int, default=5, help="collaborations per mode")
    p.add_argument("--turns", type=int, default=4, help="alternate: turns (blend/condition: turns x lines lines)")
    p.add_argument("--lines", type=int, default=SEGMENT_LINES, help="lines per turn (the judge's real segments: 4)")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--guidance", type=float, nargs="+", default=[4.0, 8.0], help="w of the guided alternate runs")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="working directory (default: a new temporary one)")
    p.add_argument("--json", default=None, help="also copy the result JSON here")
    args = p.parse_args(argv)
    if args.quick:
        args.source = args.source or "demo"
        args.artists = args.artists or ["Juniper Vale", "DJ Kilowatt"]
        args.seeds, args.turns, args.lines = min(args.seeds, 2), min(args.turns, 2), min(args.lines, 2)
    args.source = args.source or str(GIITAAYAN)
    args.artists = args.artists or list(DEFAULT_ARTISTS)
    if args.source == str(GIITAAYAN) and not GIITAAYAN.exists():
        raise SystemExit(f"{GIITAAYAN} is absent; pass --source and --artists, or --quick")
    result = run(args)
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
