"""Training loop of the n-gram siamese model (model.kind: ngram): fresh same/different-artist pairs every epoch,
each side a whole song or a few-line segment of it, a contrastive pairwise loss on exp(-L1), the best checkpoint
kept by validation accuracy.

Pairs are drawn anew each epoch (as many as `pairs.train` holds) rather than fixed once: with a bag-of-n-grams
encoder a step costs about a millisecond, so the many pairs that keep a hashed table from memorising single songs
are cheap. One process: the whole run takes minutes on a CPU, and sparse table gradients gain nothing from DDP.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from tqdm.auto import tqdm

from ..fileio import atomic_write_json, atomic_write_text
from ..tracking import Tracker
from .checkpoint import save_similarity_checkpoint
from .config import SimilarityConfig
from .metrics import pair_metrics
from .ngram import NgramFeatures, NgramSiamese, RowAdam, bags
from .pairs import Pair, PairSet, artist_names, normalise


class Views:
    """Per song, its lines' n-gram ids; a view is the whole song or a window of a few lines."""

    def __init__(self, features: NgramFeatures, texts: list[str], segment_lines: int, segment_share: float):
        self.lines = [features.lines(t) or [np.zeros(1, np.int64)] for t in texts]
        self.whole = [np.concatenate(x) for x in self.lines]
        self.segment_lines, self.segment_share = segment_lines, segment_share

    def view(self, song: int, rng: random.Random) -> np.ndarray:
        lines = self.lines[song]
        if rng.random() >= self.segment_share or len(lines) <= self.segment_lines:
            return self.whole[song]
        n = rng.randint(self.segment_lines, 2 * self.segment_lines)
        start = rng.randrange(max(len(lines) - n, 0) + 1)
        return np.concatenate(lines[start : start + n])


def draw_pairs(songs: list[int], artist_of: list[str], n: int, rng: random.Random) -> list[Pair]:
    """n pairs, half same-artist, half different; the first song's artist drawn uniformly, so a lyricist with
    four times the songs does not dominate."""
    by_artist: dict[str, list[int]] = defaultdict(list)
    for i in songs:
        by_artist[artist_of[i]].append(i)
    names = sorted(a for a in by_artist if len(by_artist[a]) >= 2)
    out: list[Pair] = []
    for k in range(n):
        a = rng.choice(names)
        i = rng.choice(by_artist[a])
        if k % 2 == 0:
            j = rng.choice([s for s in by_artist[a] if s != i] if len(by_artist[a]) < 64 else by_artist[a])
            while j == i:
                j = rng.choice(by_artist[a])
            out.append((i, j, 1.0))
        else:
            other = rng.choice([b for b in by_artist if b != a])
            out.append((i, rng.choice(by_artist[other]), 0.0))
    return out


def _batch(views: Views, pairs: list[Pair], rng: random.Random, whole: bool = False, drop: float = 0.0):
    """Both sides' bags (left sides first); `drop` leaves out that share of each training side's n-grams."""
    left = [views.whole[a] if whole else views.view(a, rng) for a, _, _ in pairs]
    right = [views.whole[b] if whole else views.view(b, rng) for _, b, _ in pairs]
    sides = left + right
    if drop > 0:
        np_rng = np.random.default_rng(rng.getrandbits(32))
        sides = [x[np_rng.random(len(x)) >= drop] if len(x) > 1 else x for x in sides]
    ids, offsets = bags(sides)
    return ids, offsets, torch.tensor([t for _, _, t in pairs], dtype=torch.float32)


@torch.no_grad()
def predict(model: NgramSiamese, views: Views, pairs: list[Pair], whole: bool, seed: int, device) -> np.ndarray:
    model.eval()
    rng = random.Random(seed)  # the same segments every evaluation
    preds = []
    for start in range(0, len(pairs), 512):
        ids, offsets, _ = _batch(views, pairs[start : start + 512], rng, whole)
        preds.append(model(ids.to(device), offsets.to(device)).cpu())
    model.train()
    return torch.cat(preds).numpy() if preds else np.zeros(0)


def pair_loss(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "mse":
        return F.mse_loss(pred, target)
    # -log s for similar pairs is the L1 distance itself; -log(1 - s) pushes dissimilar pairs apart.
    return F.binary_cross_entropy(pred.clamp(1e-6, 1 - 1e-6), target)


def train_ngram(cfg: SimilarityConfig, pairs: PairSet, acc) -> dict:
    """Train per `cfg` on `pairs`; returns the held-out metrics of the best checkpoint (prefixed test_)."""
    t, out = cfg.train, Path(cfg.train.out_dir)
    songs = pairs.songs
    device = acc.device
    features = NgramFeatures.from_config(cfg.model)
    torch.manual_seed(t.seed)
    model = NgramSiamese(cfg.model, len(features)).to(device)
    dense = [p for n, p in model.named_parameters() if not n.startswith("embedding")]
    table, optimizer = RowAdam(model.embedding.weight, lr=t.lr), torch.optim.Adam(dense, lr=t.lr)
    tic = time.perf_counter()
    views = Views(features, [s.text for s in songs], t.segment_lines, t.segment_share)
    acc.print(f"n-gram features of {len(songs)} songs in {time.perf_counter() - tic:.1f}s "
              f"({np.mean([len(v) for v in views.whole]):.0f} per song, {len(features)} buckets)")
    model.set_idf([views.whole[i] for i in pairs.train_songs])
    artist_of = [normalise(s.artist) for s in songs]
    artists = artist_names([songs[i] for i in pairs.train_songs])
    artist_id = {normalise(a): k for k, a in enumerate(artists)}
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        from .train import TEST_SET, _test_set

        atomic_write_json(out / TEST_SET, _test_set(songs, pairs.test))
        atomic_write_json(out / "pairs_info.json", pairs.info)
    tracker = Tracker(acc, cfg, out)
    rng = random.Random(t.seed)
    per_epoch = max(len(pairs.train), t.batch_size)
    steps = (per_epoch + t.batch_size - 1) // t.batch_size
    best, best_metrics, step, last = -1.0, {}, 0, {}

    def save(name: str, metrics: dict, epoch: int) -> None:
        vectors = model.encode_texts(features, [songs[i].text for i in pairs.train_songs])
        ids = torch.tensor([artist_id[artist_of[i]] for i in pairs.train_songs])
        save_similarity_checkpoint(out / "checkpoints" / name, model, features, artists, vectors, ids,
                                   step=step, epoch=epoch, sources=list(cfg.data.sources), metrics=metrics)

    for epoch in range(1, t.epochs + 1):
        epoch_pairs = draw_pairs(pairs.train_songs, artist_of, per_epoch, rng)
        bar = tqdm(range(steps), desc=f"epoch {epoch}/{t.epochs}", unit="step", leave=False, mininterval=2,
                   disable=not acc.is_main_process)
        seen, tic = 0, time.perf_counter()
        for k in bar:
            chunk = epoch_pairs[k * t.batch_size : (k + 1) * t.batch_size]
            ids, offsets, target = _batch(views, chunk, rng, drop=t.word_dropout)
            ids = ids.to(device)
            rows, local_ids = table.rows(ids)
            pred = model(ids, offsets.to(device), rows, local_ids)
            loss = pair_loss(pred, target.to(device), t.loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if t.grad_clip:
                torch.nn.utils.clip_grad_norm_(dense + [rows], t.grad_clip)
            optimizer.step()
            table.step(rows)
            step += 1
            seen += len(chunk)
            if step % t.log_every == 0:
                rate = seen / (time.perf_counter() - tic)
                bar.set_postfix(loss=f"{loss.item():.3f}", pairs_per_s=f"{rate:.0f}")
                tracker.log({"epoch": epoch, "train_loss": loss.item(), "lr": t.lr, "pairs_per_sec": rate}, step)
        if epoch % t.eval_every and epoch != t.epochs:
            continue
        test_pred = predict(model, views, pairs.test, True, t.seed, device)
        last = {f"test_{k}": v for k, v in pair_metrics(test_pred, [p[2] for p in pairs.test]).items()}
        row = {"epoch": epoch, "val_loss": last["test_mse"], **last}
        score = None
        if pairs.val:
            songs_acc = pair_metrics(predict(model, views, pairs.val, True, t.seed, device), [p[2] for p in pairs.val])
            segs = predict(model, views, pairs.val, False, t.seed, device)
            segs_acc = pair_metrics(segs, [p[2] for p in pairs.val])
            score = (songs_acc["accuracy"] + segs_acc["accuracy"]) / 2
            row.update(val_accuracy=songs_acc["accuracy"], val_segment_accuracy=segs_acc["accuracy"],
                       val_loss=songs_acc["mse"])
        tracker.log(row, step)
        shown = f", validation {score:.1%} (songs and segments)" if score is not None else ""
        acc.print(f"epoch {epoch}: test accuracy {last['test_accuracy']:.1%}{shown}")
        if acc.is_main_process:
            save("last", last, epoch)
            if score is None or score > best:
                best, best_metrics = (score if score is not None else best), last
                save("best", last, epoch)
    tracker.finish()
    return best_metrics or last
