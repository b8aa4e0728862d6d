"""similarity train/eval: fit a siamese model on song pairs, evaluate on held-out songs.

One loop for both models (`model.kind`): the run plumbing is lyricdist.run's and lyricdist.state's, shared with the
generator's trainer (run directory, config check on --resume, stop on a signal, resumable state, best/last
checkpoints, metrics). What differs per model lives in an "arm": how an epoch's batches are made, one training
step, evaluation and the checkpoint it writes (MaLSTMArm here, NgramArm in train_ngram.py).

Every epoch's batches are a function of (seed, epoch) and the random state accelerate saves, so a run stopped
anywhere resumes bitwise on CPU (the remaining batches of the epoch are skipped to, not redrawn).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from ..checkpoint import BestAndLast
from ..divergence import DivergenceGuard, fix_hint
from ..errors import LyricdistError
from ..fileio import atomic_write_json
from ..precision import (Precision, RNNShape, choose_precision, full_precision_state, masters_for, optimizer_step,
                         trained_params)
from ..run import (StopOnSignal, ThroughputWindow, close_run_dir, lock_run_dir, make_accelerator, open_run_dir,
                   use_config_hyperparameters)
from ..sources import Song
from ..state import EXACTNESS, load_state, restore_full_precision, save_state
from ..tracking import Tracker
from .checkpoint import checkpoint_dir, encode_texts, load_similarity_checkpoint, save_similarity_checkpoint
from .config import SimilarityConfig
from .metrics import pair_metrics
from .model import MaLSTM
from .pairs import Pair, PairSet, artist_names, build_pairs, normalise
from .tokenize import WordVocab, load_vectors

TEST_SET = "test_set.json"
RESUME_CHECKED_KEYS = ("data", "model", "train.batch_size", "train.seed", "train.loss")
STOP_CALIBRATION_STEPS = 5  # steps timed to space the stop-signal agreements of several processes
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


def _test_set(songs: list[Song], pairs: list[Pair]) -> dict:
    """The held-out pairs with their songs' texts, so `eval` sees exactly these songs even if the sources change."""
    used = sorted({i for a, b, _ in pairs for i in (a, b)})
    pos = {i: k for k, i in enumerate(used)}
    return {
        "songs": [{"artist": songs[i].artist, "title": songs[i].title, "text": songs[i].text} for i in used],
        "pairs": [[pos[a], pos[b], t] for a, b, t in pairs],
    }


class EpochPermutation(Sampler):
    """A shuffle that depends only on (seed, epoch): an epoch can be replayed, so a resumed run sees the same order."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter(torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
                    .tolist())


class MaLSTMArm:
    """The word-level MaLSTM (the paper's model): DataLoader pairs, DDP through accelerate, the precision rule."""

    def __init__(self, cfg: SimilarityConfig, pairs: PairSet, acc):
        t, m, songs = cfg.train, cfg.model, pairs.songs
        self.cfg, self.pairs, self.acc = cfg, pairs, acc
        self.vocab = WordVocab.build((songs[i].text for i in pairs.train_songs), m.lowercase, m.max_vocab, m.min_count)
        encoded = [self.vocab.encode(s.text) for s in songs]
        model = MaLSTM(m, len(self.vocab))
        if m.vectors:
            weight, found = load_vectors(m.vectors, self.vocab, m.embedding_dim)
            model.set_pretrained(weight, m.freeze_embeddings)
            acc.print(f"word vectors: {found} of {len(self.vocab) - 2} words found in {m.vectors}")
        # The same rule as the generator: a 16-bit encoder computes on its own weights, fp32 masters take the updates.
        model.to(acc.device)
        per_process = max(1, t.batch_size // acc.num_processes)
        self.precision = choose_precision(t.mixed_precision, acc.device, RNNShape.of(model.encoder, 2 * per_process))
        acc.print(self.precision.describe())
        self.masters = masters_for(model, model.encoder, self.precision)
        self.trained = trained_params([p for p in model.parameters() if p.requires_grad], self.masters)
        optimizer = torch.optim.Adam(self.trained, lr=t.lr, **({"fused": True} if acc.device.type == "cuda" else {}))
        self.scaler = torch.amp.GradScaler(acc.device.type, enabled=self.precision.loss_scaling)
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

    def train_step(self, batch) -> tuple[torch.Tensor, int]:
        ids_a, len_a, ids_b, len_b, target = batch
        t = self.cfg.train
        ids_a, ids_b = drop_words(ids_a, t.word_dropout), drop_words(ids_b, t.word_dropout)
        with self.precision.autocast(self.acc.device):
            pred = self.model(ids_a, len_a, ids_b, len_b)
        loss = pair_loss(pred.float(), target, t.loss)
        self.acc.backward(self.scaler.scale(loss))
        optimizer_step(self.optimizer.optimizer, self.scaler, self.masters,
                       lambda: self.acc.clip_grad_norm_(self.trained, t.grad_clip) if t.grad_clip else None)
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach(), len(target) * self.acc.num_processes

    def evaluate(self) -> tuple[dict, dict, float | None]:
        """(held-out test metrics, validation metrics to log, the validation accuracy that ranks checkpoints: None
        without a validation side)."""
        test = pair_metrics(*(x.numpy() for x in predict(self.model, self.test_loader, self.acc, self.precision)))
        if self.val_loader is None:
            return test, {}, None
        val = pair_metrics(*(x.numpy() for x in predict(self.model, self.val_loader, self.acc, self.precision)))
        return test, {"val_accuracy": val["accuracy"], "val_loss": val["mse"]}, val["accuracy"]

    def write_checkpoint(self, path: Path, **info) -> None:
        songs, train_songs = self.pairs.songs, self.pairs.train_songs
        artists = artist_names([songs[i] for i in train_songs])
        artist_id = {normalise(a): k for k, a in enumerate(artists)}
        model = self.acc.unwrap_model(self.model)
        vectors = encode_texts(model, self.vocab, [songs[i].text for i in train_songs])
        ids = torch.tensor([artist_id[normalise(songs[i].artist)] for i in train_songs])
        save_similarity_checkpoint(path, model, self.vocab, artists, vectors, ids,
                                   state=full_precision_state(model, self.masters), **info)

    def full_precision(self) -> dict[str, torch.Tensor]:
        model = self.acc.unwrap_model(self.model)
        return {k: v for k, v in full_precision_state(model, self.masters).items() if k.startswith("encoder.")}

    def restore(self, full: dict[str, torch.Tensor]) -> None:
        restore_full_precision(self.acc.unwrap_model(self.model).encoder, "encoder.", full, self.masters)


def pair_loss(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "mse":
        return F.mse_loss(pred, target)
    # -log s for similar pairs is the L1 distance itself; -log(1 - s) pushes dissimilar pairs apart. A NaN
    # prediction (a diverged model) makes the loss NaN, as it does under mse, for the divergence check to see:
    # binary_cross_entropy itself rejects NaN inputs (on a GPU with a device-side assert).
    loss = F.binary_cross_entropy(pred.nan_to_num(0.5).clamp(1e-6, 1 - 1e-6), target)
    return torch.where(pred.isnan().any(), torch.nan, loss)


def train(cfg: SimilarityConfig, pairs: PairSet | None = None, resume: bool = False) -> dict:
    """Train per `cfg` (on `pairs`, default: drawn from cfg.data); returns the held-out metrics (prefixed test_) of
    the checkpoint kept: the best by validation accuracy when the data has a validation side, else the last.
    The run directory is locked for the run's life."""
    try:
        return _train(cfg, pairs, resume)
    finally:
        close_run_dir(Path(cfg.train.out_dir))


def _train(cfg: SimilarityConfig, pairs: PairSet | None, resume: bool) -> dict:
    from accelerate.utils import set_seed

    cfg.validate()
    t, out = cfg.train, Path(cfg.train.out_dir)
    acc = make_accelerator(cfg)
    lock_run_dir(acc, out, create=False)  # another run writing OUT_DIR: fail now, not after drawing pairs
    set_seed(t.seed)
    pairs = build_pairs(cfg.data) if pairs is None else pairs
    if "join_rate" in pairs.info:
        i = pairs.info
        acc.print(
            f"Last.fm join: {i['matched_tracks']} of {i['lastfm_tracks']} tracks have lyrics ({i['join_rate']:.1%}); "
            f"{i['listed_pairs']} listed pairs, {i['cross_split_pairs_dropped']} dropped across the split"
        )
    acc.print(
        f"{len(pairs.train_songs)} train / {len(pairs.val_songs)} validation / {len(pairs.test_songs)} test songs; "
        f"{len(pairs.train)} train / {len(pairs.val)} validation / {len(pairs.test)} test pairs"
    )
    if cfg.model.kind == "ngram":
        from .train_ngram import NgramArm

        arm = NgramArm(cfg, pairs, acc)
    else:
        arm = MaLSTMArm(cfg, pairs, acc)
    checkpoints = BestAndLast(out)  # ranked by validation error (1 - accuracy): lower is better
    step, epoch, skip, run_id, best_metrics = 0, 1, 0, None, {}
    state_dir = open_run_dir(acc, out, cfg.to_dict(), resume, RESUME_CHECKED_KEYS)
    if state_dir is not None:
        saved = load_state(acc, state_dir)
        step, epoch, skip = int(saved.info["step"]), int(saved.info["epoch"]), int(saved.info["batch"])
        checkpoints.best = saved.info["best_error"] if saved.info.get("best_error") is not None else checkpoints.best
        best_metrics, run_id = saved.info.get("best_metrics") or {}, saved.info.get("wandb_run_id")
        arm.restore(saved.full_precision)
        use_config_hyperparameters(acc, arm.optimizer, t.lr, 0.0)  # the config's rate, not the saved optimizer's
        acc.print(f"resumed from {state_dir} at epoch {epoch}, step {step}: {EXACTNESS[acc.device.type == 'cuda']}")
    if acc.is_main_process:
        atomic_write_json(out / TEST_SET, _test_set(pairs.songs, pairs.test))
        atomic_write_json(out / "pairs_info.json", pairs.info)
    tracker = Tracker(acc, cfg, out, run_id=run_id, resume_step=step, job_type="similarity-train")
    weights = [*acc.unwrap_model(arm.model).parameters(), *arm.full_precision().values()]  # what a save writes
    guard = DivergenceGuard(acc, out, weights,
                            fix_hint(t.lr, t.grad_clip), getattr(arm, "scaler", None), grad_norm=False)

    def save(next_epoch: int, next_batch: int) -> None:
        guard.check(step)  # never a state with non-finite weights
        info = {"step": step, "epoch": next_epoch, "batch": next_batch, "best_error": checkpoints.best_or_none,
                "best_metrics": best_metrics, "wandb_run_id": tracker.run_id}
        save_state(acc, out / "state", info, {}, arm.full_precision())

    last: dict = {}
    window = ThroughputWindow(acc.device)
    first_step, started = step, time.perf_counter()
    with StopOnSignal(acc, t.log_every, STOP_CHECK_SECONDS) as stop:
        for epoch in range(epoch, t.epochs + 1):
            bar = tqdm(arm.batches(epoch, skip), desc=f"epoch {epoch}/{t.epochs}", unit="batch", leave=False,
                       initial=skip, total=arm.steps_per_epoch(), mininterval=2, disable=not acc.is_main_process)
            window_loss, window_steps = torch.zeros((), device=acc.device), 0
            for k, batch in enumerate(bar, start=skip):
                with guard.stepping(step + 1):
                    loss, n_pairs = arm.train_step(batch)
                step += 1
                guard.observe(step, loss)
                window_loss += loss
                window_steps += 1
                window.add(n_pairs)
                if step % t.log_every == 0:
                    guard.check(step, weights=False)
                    row = {"epoch": epoch, "train_loss": acc.reduce(window_loss, "mean").item() / window_steps,
                           "lr": t.lr, "pairs_per_sec": window.rate()}
                    bar.set_postfix(loss=f"{row['train_loss']:.3f}", pairs_per_s=f"{row['pairs_per_sec']:.0f}")
                    tracker.log(row, step)
                    window_loss, window_steps = torch.zeros((), device=acc.device), 0
                    window.reset()
                if step == first_step + STOP_CALIBRATION_STEPS:
                    stop.calibrate((time.perf_counter() - started) / STOP_CALIBRATION_STEPS)
                if stop.requested(step):
                    stop.stop(step, lambda: save(epoch, k + 1))
            bar.close()
            skip = 0
            if epoch % t.eval_every_epochs and epoch != t.epochs:
                continue
            with window.paused():
                guard.check(step)  # before the checkpoint
                test, val, score = arm.evaluate()
                last = {f"test_{k}": v for k, v in test.items()}
                tracker.log({"epoch": epoch, "val_loss": last["test_mse"], **last, **val}, step)
                shown = f", validation {score:.1%}" if score is not None else ""
                acc.print(f"epoch {epoch}: test accuracy {last['test_accuracy']:.1%}, "
                          f"deciles {last['test_decile_accuracy']:.1%}{shown}")
                if acc.is_main_process:
                    aliases = checkpoints.update(None if score is None else 1 - score, lambda path: arm.write_checkpoint(
                        path, step=step, epoch=epoch, sources=list(cfg.data.sources), metrics=last))
                    if "best" in aliases:
                        best_metrics = last
                acc.wait_for_everyone()
                save(epoch + 1, 0)
    tracker.finish()
    return best_metrics or last


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
        raise LyricdistError(f"{test_path} not found; pass --test-set FILE (the test_set.json of a run)") from None
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
