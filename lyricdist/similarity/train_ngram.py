"""The n-gram siamese model's arm of the similarity loop (model.kind: ngram): fresh same/different-artist pairs
every epoch, each side a whole song or a few-line segment of it, a contrastive pairwise loss on exp(-L1).

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

from ..errors import LyricdistError
from .arm import SiameseArm
from .checkpoint import save_similarity_checkpoint
from .config import SimilarityConfig
from .metrics import pair_metrics
from .model import pair_loss
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


class NgramArm(SiameseArm):
    """The n-gram siamese model's part of the similarity loop (see train.py): pairs drawn anew every epoch from
    (seed, epoch), each side a whole song or a few-line segment; the table's rows a step uses by RowAdam, the dense
    layers by Adam."""

    def __init__(self, cfg: SimilarityConfig, pairs: PairSet, acc):
        if acc.num_processes > 1:
            raise LyricdistError("model.kind=ngram trains in one process (a step is about a millisecond and sparse "
                                 "table gradients gain nothing from DDP); run it without torchrun/accelerate launch")
        super().__init__(cfg, pairs, acc)
        t, songs = cfg.train, pairs.songs
        self.features = NgramFeatures.from_config(cfg.model)
        torch.manual_seed(t.seed)
        model = NgramSiamese(cfg.model, len(self.features)).to(acc.device)
        self.dense = [p for n, p in model.named_parameters() if not n.startswith("embedding")]
        self.model, self.optimizer = acc.prepare(model, torch.optim.Adam(self.dense, lr=t.lr))
        self.table = RowAdam(model.embedding.weight, lr=t.lr)
        acc.register_for_checkpointing(self.table)  # its moments are part of the resumable state
        tic = time.perf_counter()
        self.views = Views(self.features, [s.text for s in songs], t.segment_lines, t.segment_share)
        acc.print(f"n-gram features of {len(songs)} songs in {time.perf_counter() - tic:.1f}s "
                  f"({np.mean([len(v) for v in self.views.whole]):.0f} per song, {len(self.features)} buckets)")
        model.set_idf([self.views.whole[i] for i in pairs.train_songs])
        self.artist_of = [normalise(s.artist) for s in songs]
        self.per_epoch = max(len(pairs.train), t.batch_size)

    def steps_per_epoch(self) -> int:
        return (self.per_epoch + self.cfg.train.batch_size - 1) // self.cfg.train.batch_size

    def batches(self, epoch: int, skip: int):
        t = self.cfg.train
        epoch_pairs = draw_pairs(self.pairs.train_songs, self.artist_of, self.per_epoch,
                                 random.Random(f"{t.seed}/{epoch}"))
        for k in range(skip, self.steps_per_epoch()):
            chunk = epoch_pairs[k * t.batch_size : (k + 1) * t.batch_size]
            yield _batch(self.views, chunk, random.Random(f"{t.seed}/{epoch}/{k}"), drop=t.word_dropout)

    def step_on(self, batch) -> tuple[torch.Tensor, int]:
        ids, offsets, target = batch
        device, t = self.acc.device, self.cfg.train
        ids = ids.to(device)
        rows, local_ids = self.table.rows(ids)
        loss = pair_loss(self.model(ids, offsets.to(device), rows, local_ids), target.to(device), t.loss)
        self.optimizer.zero_grad(set_to_none=True)
        self.acc.backward(loss)
        if t.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.dense + [rows], t.grad_clip)
        self.optimizer.step()
        self.table.step(rows)
        return loss, len(target)

    def held_out(self) -> tuple[dict, dict, float | None]:
        """(test metrics, validation metrics, the score ranking checkpoints: the mean of the validation accuracy on
        whole songs and on segments, so the model kept attributes collaboration segments too)."""
        seed, device, p = self.cfg.train.seed, self.acc.device, self.pairs
        test = pair_metrics(predict(self.model, self.views, p.test, True, seed, device), [x[2] for x in p.test])
        if not p.val:
            return test, {}, None
        targets = [x[2] for x in p.val]
        songs = pair_metrics(predict(self.model, self.views, p.val, True, seed, device), targets)
        segments = pair_metrics(predict(self.model, self.views, p.val, False, seed, device), targets)
        row = {"val_accuracy": songs["accuracy"], "val_segment_accuracy": segments["accuracy"], "val_loss": songs["mse"]}
        return test, row, (songs["accuracy"] + segments["accuracy"]) / 2

    def save_checkpoint(self, path: Path, **info) -> None:
        songs, train_songs = self.pairs.songs, self.pairs.train_songs
        artists = artist_names([songs[i] for i in train_songs])
        artist_id = {normalise(a): k for k, a in enumerate(artists)}
        vectors = self.model.encode_texts(self.features, [songs[i].text for i in train_songs])
        ids = torch.tensor([artist_id[self.artist_of[i]] for i in train_songs])
        save_similarity_checkpoint(path, self.model, self.features, artists, vectors, ids, **info)

    def full_precision(self) -> dict[str, torch.Tensor]:
        return {}  # fp32 throughout: accelerate's state holds the weights

    def restore_weights(self, full: dict[str, torch.Tensor]) -> None:
        pass  # accelerate's state holds the weights
