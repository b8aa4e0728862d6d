"""similarity train/eval: fit a siamese model on song pairs, evaluate on held-out songs.

Both models train in the one training loop (lyricdist.loop), the generator's too: run directory, config check on
--resume, stop on a signal, resumable state, best/last checkpoints, metrics. What differs per model is its arm:
MaLSTMArm here, NgramArm in train_ngram.py, both on the shared SiameseArm (arm.py).

Every epoch's batches are a function of (seed, epoch) and the random state accelerate saves, so a run stopped
anywhere resumes bitwise on CPU (the remaining batches of the epoch are skipped to, not redrawn).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import LyricdistError
from ..loop import Loop, Schedule
from ..precision import MixedPrecision, Precision
from ..run import close_run_dir, lock_run_dir, make_accelerator
from ..state import restore_full_precision
from .arm import TEST_SET, SiameseArm
from .checkpoint import checkpoint_dir, encode_texts, load_similarity_checkpoint, save_similarity_checkpoint
from .config import SimilarityConfig
from .metrics import pair_metrics
from .model import MaLSTM, pair_loss
from .pairs import Pair, PairSet, artist_names, build_pairs, normalise
from .tokenize import WordVocab, load_vectors

RESUME_CHECKED_KEYS = ("data", "model", "train.batch_size", "train.seed", "train.loss")
STOP_CHECK_SECONDS = 5.0  # with several processes, at most this much training between stop-signal agreements


class PairDataset(Dataset):
    """Pairs of word-id lists cut to max_len words: the opening words, or (random_windows, for training) a window
    starting anywhere, so that every epoch shows other parts of each song instead of the same opening to memorise.
    A window depends only on (seed, epoch, pair), never on a random state a prefetching loader would advance."""

    def __init__(self, encoded: list[list[int]], pairs: list[Pair], max_len: int, random_windows: bool = False,
                 seed: int = 0):
        self.encoded, self.pairs, self.max_len, self.random_windows = encoded, pairs, max_len, random_windows
        self.seed, self.epoch = seed, 0

    def __len__(self) -> int:
        return len(self.pairs)

    def _cut(self, ids: list[int], gen: torch.Generator | None) -> list[int]:
        start = 0
        if gen is not None and len(ids) > self.max_len:
            start = int(torch.randint(len(ids) - self.max_len + 1, (), generator=gen))
        return ids[start : start + self.max_len]

    def __getitem__(self, i: int):
        a, b, target = self.pairs[i]
        gen = None
        if self.random_windows:
            gen = torch.Generator().manual_seed((self.seed * 100_003 + self.epoch) * 1_000_003 + i)
        return self._cut(self.encoded[a], gen), self._cut(self.encoded[b], gen), target


def drop_words(ids: torch.Tensor, p: float) -> torch.Tensor:
    """Replace a fraction p of the (non-padding) words by <unk>: the model cannot lean on one song's rare words."""
    if p <= 0:
        return ids
    return ids.masked_fill((torch.rand(ids.shape, device=ids.device) < p) & (ids > 0), 1)


def _pad(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(s) for s in seqs])
    out = torch.zeros(len(seqs), int(lengths.max()), dtype=torch.long)
    for row, s in enumerate(seqs):
        out[row, : len(s)] = torch.tensor(s)
    return out, lengths


def collate(batch):
    ids_a, len_a = _pad([b[0] for b in batch])
    ids_b, len_b = _pad([b[1] for b in batch])
    return ids_a, len_a, ids_b, len_b, torch.tensor([b[2] for b in batch], dtype=torch.float32)


@torch.no_grad()
def predict(model, loader, acc, precision: Precision) -> tuple[torch.Tensor, torch.Tensor]:
    was_training = model.training
    model.eval()
    preds, targets = [], []
    for ids_a, len_a, ids_b, len_b, target in loader:
        with precision.autocast(acc.device):
            pred = model(ids_a, len_a, ids_b, len_b).float()
        pred, target = acc.gather_for_metrics((pred, target))
        preds.append(pred.cpu())
        targets.append(target.cpu())
    model.train(was_training)
    return torch.cat(preds), torch.cat(targets)


class EpochPermutation(Sampler):
    """A shuffle that depends only on (seed, epoch): an epoch can be replayed, so a resumed run sees the same order."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter(torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
                    .tolist())


class MaLSTMArm(SiameseArm):
    """The word-level MaLSTM (the paper's model): DataLoader pairs, DDP through accelerate, the precision rule."""

    def __init__(self, cfg: SimilarityConfig, pairs: PairSet, acc):
        super().__init__(cfg, pairs, acc)
        t, m, songs = cfg.train, cfg.model, pairs.songs
        self.vocab = WordVocab.build((songs[i].text for i in pairs.train_songs), m.lowercase, m.max_vocab, m.min_count)
        encoded = [self.vocab.encode(s.text) for s in songs]
        model = MaLSTM(m, len(self.vocab))
        if m.vectors:
            weight, found = load_vectors(m.vectors, self.vocab, m.embedding_dim)
            model.set_pretrained(weight, m.freeze_embeddings)
            acc.print(f"word vectors: {found} of {len(self.vocab) - 2} words found in {m.vectors}")
        model.to(acc.device)
        per_process = max(1, t.batch_size // acc.num_processes)
        # The same rule as the generator: a 16-bit encoder computes on its own weights, fp32 masters take the updates.
        self.mp = MixedPrecision(acc, model, model.encoder, t.mixed_precision, 2 * per_process)
        self.precision, self.masters, self.scaler = self.mp.precision, self.mp.masters, self.mp.scaler
        self.trained = self.mp.trained_params([p for p in model.parameters() if p.requires_grad])
        optimizer = torch.optim.Adam(self.trained, lr=t.lr, **({"fused": True} if acc.device.type == "cuda" else {}))
        # Loaders draw nothing from the global random state (their own generators): what a resumed run replays
        # does not depend on how many iterators were opened or batches prefetched.
        self.sampler = EpochPermutation(len(pairs.train), t.seed)
        self.train_set = PairDataset(encoded, pairs.train, m.max_len, t.random_windows, t.seed)
        train_loader = DataLoader(self.train_set, batch_size=per_process, sampler=self.sampler, collate_fn=collate,
                                  generator=torch.Generator().manual_seed(t.seed))

        def held_out(which: list[Pair]):
            return DataLoader(PairDataset(encoded, which, m.max_len), batch_size=4 * per_process, collate_fn=collate,
                              generator=torch.Generator().manual_seed(t.seed))

        # DDP refuses a module with nothing to reduce: frozen word vectors and a 16-bit encoder (whose fp32 gradients
        # MasterWeights all-reduces itself) leave it nothing.
        ddp_has_work = any(p.requires_grad and (self.masters is None or self.masters.master_of(p) is p)
                           for p in model.parameters())
        self.model = acc.prepare_model(model, evaluation_mode=not ddp_has_work)
        self.optimizer, self.train_loader, self.test_loader = acc.prepare(
            optimizer, train_loader, held_out(pairs.test))
        self.val_loader = acc.prepare(held_out(pairs.val)) if pairs.val else None

    def batches(self, epoch: int, skip: int):
        self.sampler.epoch = self.train_set.epoch = epoch
        return self.acc.skip_first_batches(self.train_loader, skip) if skip else self.train_loader

    def steps_per_epoch(self) -> int:
        return len(self.train_loader)

    def step_on(self, batch) -> tuple[torch.Tensor, int]:
        ids_a, len_a, ids_b, len_b, target = batch
        t = self.cfg.train
        ids_a, ids_b = drop_words(ids_a, t.word_dropout), drop_words(ids_b, t.word_dropout)
        with self.mp.autocast():
            pred = self.model(ids_a, len_a, ids_b, len_b)
        loss = pair_loss(pred.float(), target, t.loss)
        self.acc.backward(self.mp.scale(loss))
        self.mp.step(self.optimizer, lambda: self.acc.clip_grad_norm_(self.trained, t.grad_clip) if t.grad_clip else None)
        self.optimizer.zero_grad(set_to_none=True)
        return loss, len(target)

    def held_out(self) -> tuple[dict, dict, float | None]:
        """(held-out test metrics, validation metrics to log, the validation accuracy that ranks checkpoints: None
        without a validation side)."""
        test = pair_metrics(*(x.numpy() for x in predict(self.model, self.test_loader, self.acc, self.precision)))
        if self.val_loader is None:
            return test, {}, None
        val = pair_metrics(*(x.numpy() for x in predict(self.model, self.val_loader, self.acc, self.precision)))
        return test, {"val_accuracy": val["accuracy"], "val_loss": val["mse"]}, val["accuracy"]

    def save_checkpoint(self, path: Path, **info) -> None:
        songs, train_songs = self.pairs.songs, self.pairs.train_songs
        artists = artist_names([songs[i] for i in train_songs])
        artist_id = {normalise(a): k for k, a in enumerate(artists)}
        model = self.acc.unwrap_model(self.model)
        vectors = encode_texts(model, self.vocab, [songs[i].text for i in train_songs])
        ids = torch.tensor([artist_id[normalise(songs[i].artist)] for i in train_songs])
        save_similarity_checkpoint(path, model, self.vocab, artists, vectors, ids,
                                   state=self.mp.full_precision_state(model), **info)

    def full_precision(self) -> dict[str, torch.Tensor]:
        model = self.acc.unwrap_model(self.model)
        return {k: v for k, v in self.mp.full_precision_state(model).items() if k.startswith("encoder.")}

    def restore_weights(self, full: dict[str, torch.Tensor]) -> None:
        restore_full_precision(self.acc.unwrap_model(self.model).encoder, "encoder.", full, self.masters)

    def resumable_state(self):
        own = super().resumable_state()
        own.info.update(self.mp.state_dict())  # the fp16 loss scale
        return own

    def restore(self, saved) -> None:
        super().restore(saved)
        self.mp.load_state_dict(saved.info)


def train(cfg: SimilarityConfig, pairs: PairSet | None = None, resume: bool = False) -> dict:
    """Train per `cfg` (on `pairs`, default: drawn from cfg.data); returns the held-out metrics (prefixed test_) of
    the checkpoint kept: the best by validation accuracy when the data has a validation side, else the last.
    The run directory is locked for the run's life."""
    from accelerate.utils import set_seed

    cfg.validate()
    t, out = cfg.train, Path(cfg.train.out_dir)
    try:
        acc = make_accelerator(cfg)
        lock_run_dir(acc, out, create=False)  # another run writing OUT_DIR: fail now, not after drawing pairs
        set_seed(t.seed)
        pairs = build_pairs(cfg.data) if pairs is None else pairs
        if "join_rate" in pairs.info:
            i = pairs.info
            acc.print(f"Last.fm join: {i['matched_tracks']} of {i['lastfm_tracks']} tracks have lyrics "
                      f"({i['join_rate']:.1%}); {i['listed_pairs']} listed pairs, {i['cross_split_pairs_dropped']} "
                      f"dropped across the split")
        acc.print(f"{len(pairs.train_songs)} train / {len(pairs.val_songs)} validation / {len(pairs.test_songs)} test "
                  f"songs; {len(pairs.train)} train / {len(pairs.val)} validation / {len(pairs.test)} test pairs")
        if cfg.model.kind == "ngram":
            from .train_ngram import NgramArm

            arm = NgramArm(cfg, pairs, acc)
        else:
            arm = MaLSTMArm(cfg, pairs, acc)
        per_epoch = arm.steps_per_epoch()
        every = t.eval_every_epochs * per_epoch
        schedule = Schedule(t.epochs * per_epoch, t.log_every, every, every, STOP_CHECK_SECONDS)
        result = Loop(arm, schedule, cfg, out, resume, RESUME_CHECKED_KEYS, job_type="similarity-train").fit()
        return result.best or {k: v for k, v in result.last.items() if k.startswith("test_")}
    finally:
        close_run_dir(out)


def evaluate(checkpoint: str, test_set: str | None = None, metrics_path: str | None = None) -> dict:
    """2-class and decile accuracy, Pearson and Spearman on the held-out pairs a run saved (or another test set).

    A reader: it never writes into the run directory; the result is appended as a JSON line to `metrics_path`.

    Args:
        checkpoint: a `similarity train` out_dir or checkpoint directory
        test_set: a test_set.json (default: the run's own)
        metrics_path: also append the result here as a JSON line (never into the run)
    """
    path = checkpoint_dir(checkpoint)
    model, vocab, config, _ = load_similarity_checkpoint(path)
    run_dir = path.parent.parent
    test_path = Path(test_set) if test_set else run_dir / TEST_SET
    try:
        data = json.loads(test_path.read_text(encoding="utf-8"))
        texts = [s["text"] for s in data["songs"]]
        pairs = [(int(a), int(b), float(t)) for a, b, t in data["pairs"]]
    except FileNotFoundError:
        raise LyricdistError(f"{test_path} not found; pass --test_set FILE (the test_set.json of a run)") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise LyricdistError(f"{test_path} is not a test_set.json ({e}); use the one a run wrote") from None
    vectors = encode_texts(model, vocab, texts)
    a = torch.tensor([p[0] for p in pairs], dtype=torch.long)
    b = torch.tensor([p[1] for p in pairs], dtype=torch.long)
    pred = MaLSTM.similarity(vectors[a], vectors[b])  # the same exp(-L1) for every encoder kind
    metrics = pair_metrics(pred.numpy(), [p[2] for p in pairs])
    if metrics_path:
        target = Path(metrics_path)
        row = {"stage": "eval", "step": config.get("step"), "checkpoint": str(path), "test_set": str(test_path)}
        row.update({f"test_{k}": v for k, v in metrics.items()})
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
    return metrics
