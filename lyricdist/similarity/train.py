"""similarity train/eval: fit the MaLSTM on song pairs with Accelerate (DDP-ready), evaluate on held-out songs.

Only the main process writes files; every process trains on its shard of each batch and evaluates its shard of
the test pairs (gathered for the metrics).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..errors import LyricdistError
from ..precision import (Precision, choose_precision, full_precision_state, masters_for, optimizer_step,
                         trained_params)
from ..fileio import atomic_write_json, atomic_write_text
from ..sources import Song
from ..tracking import Tracker, wandb_mode
from .checkpoint import checkpoint_dir, encode_texts, load_similarity_checkpoint, save_similarity_checkpoint
from .config import SimilarityConfig
from .metrics import pair_metrics
from .model import MaLSTM
from .pairs import Pair, PairSet, artist_names, build_pairs, normalise
from .tokenize import WordVocab, load_vectors

TEST_SET = "test_set.json"


class PairDataset(Dataset):
    """Pairs of word-id lists cut to max_len words: the opening words, or (random_windows, for training) a window
    starting anywhere, so that every epoch shows other parts of each song instead of the same opening to memorise."""

    def __init__(self, encoded: list[list[int]], pairs: list[Pair], max_len: int, random_windows: bool = False):
        self.encoded, self.pairs, self.max_len, self.random_windows = encoded, pairs, max_len, random_windows

    def __len__(self) -> int:
        return len(self.pairs)

    def _cut(self, ids: list[int]) -> list[int]:
        start = 0
        if self.random_windows and len(ids) > self.max_len:
            start = int(torch.randint(len(ids) - self.max_len + 1, ()))
        return ids[start : start + self.max_len]

    def __getitem__(self, i: int):
        a, b, target = self.pairs[i]
        return self._cut(self.encoded[a]), self._cut(self.encoded[b]), target


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


def make_accelerator(cfg: SimilarityConfig):
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    return Accelerator(
        cpu=cfg.train.cpu,
        mixed_precision="no",  # lyricdist.precision: the encoder keeps its fused kernel in 16 bits too
        log_with="wandb" if wandb_mode(cfg) else None,
        project_config=ProjectConfiguration(project_dir=cfg.train.out_dir),
    )


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


def train(cfg: SimilarityConfig, pairs: PairSet | None = None) -> dict:
    """Train per `cfg` (on `pairs`, default: drawn from cfg.data); returns the held-out metrics (prefixed test_) of
    the checkpoint kept: the best by validation when the data has a validation side, else the last."""
    from accelerate.utils import set_seed

    cfg.validate()
    t, out = cfg.train, Path(cfg.train.out_dir)
    acc = make_accelerator(cfg)
    set_seed(t.seed)
    pairs = build_pairs(cfg.data) if pairs is None else pairs
    songs = pairs.songs
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
        from .train_ngram import train_ngram

        return train_ngram(cfg, pairs, acc)
    vocab = WordVocab.build(
        (songs[i].text for i in pairs.train_songs), cfg.model.lowercase, cfg.model.max_vocab, cfg.model.min_count
    )
    encoded = [vocab.encode(s.text) for s in songs]
    model = MaLSTM(cfg.model, len(vocab))  # kind: malstm (ngram returned above)
    if cfg.model.vectors:
        weight, found = load_vectors(cfg.model.vectors, vocab, cfg.model.embedding_dim)
        model.set_pretrained(weight, cfg.model.freeze_embeddings)
        acc.print(f"word vectors: {found} of {len(vocab) - 2} words found in {cfg.model.vectors}")
    # The same rule as the generator: a 16-bit encoder computes on its own weights, fp32 masters take the updates.
    precision = choose_precision(t.mixed_precision, acc.device, "lstm")
    acc.print(precision.describe())
    model.to(acc.device)
    masters = masters_for(model.encoder, precision)
    trained = trained_params([p for p in model.parameters() if p.requires_grad], masters)
    optimizer = torch.optim.Adam(trained, lr=t.lr, **({"fused": True} if acc.device.type == "cuda" else {}))
    scaler = torch.amp.GradScaler(acc.device.type, enabled=precision.loss_scaling)
    per_process = max(1, t.batch_size // acc.num_processes)
    train_loader = DataLoader(
        PairDataset(encoded, pairs.train, cfg.model.max_len, t.random_windows),
        batch_size=per_process,
        shuffle=True,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(t.seed),
    )
    test_loader = DataLoader(
        PairDataset(encoded, pairs.test, cfg.model.max_len), batch_size=4 * per_process, collate_fn=collate
    )
    model, optimizer, train_loader, test_loader = acc.prepare(model, optimizer, train_loader, test_loader)
    val_loader = None
    if pairs.val:
        val_loader = acc.prepare(DataLoader(
            PairDataset(encoded, pairs.val, cfg.model.max_len), batch_size=4 * per_process, collate_fn=collate
        ))

    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        atomic_write_json(out / TEST_SET, _test_set(songs, pairs.test))
        atomic_write_json(out / "pairs_info.json", pairs.info)
    tracker = Tracker(acc, cfg, out)
    artists = artist_names([songs[i] for i in pairs.train_songs])
    artist_id = {normalise(a): k for k, a in enumerate(artists)}

    step, last, tic, seen, best, best_metrics = 0, {}, time.perf_counter(), 0, -1.0, {}
    for epoch in range(1, t.epochs + 1):
        bar = tqdm(train_loader, desc=f"epoch {epoch}/{t.epochs}", unit="batch", leave=False, mininterval=2,
                   disable=not acc.is_main_process)
        for ids_a, len_a, ids_b, len_b, target in bar:
            ids_a, ids_b = drop_words(ids_a, t.word_dropout), drop_words(ids_b, t.word_dropout)
            with precision.autocast(acc.device):
                pred = model(ids_a, len_a, ids_b, len_b)
            pred = pred.float()
            loss = F.mse_loss(pred, target) if t.loss == "mse" else F.binary_cross_entropy(pred.clamp(1e-6, 1 - 1e-6),
                                                                                            target)
            acc.backward(scaler.scale(loss))
            optimizer_step(optimizer.optimizer, scaler, masters,
                           lambda: acc.clip_grad_norm_(trained, t.grad_clip) if t.grad_clip else None)
            optimizer.zero_grad(set_to_none=True)
            step += 1
            seen += len(target) * acc.num_processes
            if step % t.log_every == 0:
                rate = seen / (time.perf_counter() - tic)
                bar.set_postfix(loss=f"{loss.item():.3f}", pairs_per_s=f"{rate:.0f}")
                tracker.log({"epoch": epoch, "train_loss": acc.reduce(loss.detach(), "mean").item(),
                             "lr": t.lr, "pairs_per_sec": rate}, step)
        if epoch % t.eval_every == 0 or epoch == t.epochs:
            pred, target = predict(model, test_loader, acc, precision)
            last = {f"test_{k}": v for k, v in pair_metrics(pred.numpy(), target.numpy()).items()}
            row, score = {"epoch": epoch, "val_loss": last["test_mse"], **last}, None
            if val_loader is not None:
                val = pair_metrics(*(x.numpy() for x in predict(model, val_loader, acc, precision)))
                score = val["accuracy"]
                row.update(val_loss=val["mse"], val_accuracy=score)
            tracker.log(row, step)
            shown = f", validation {score:.1%}" if score is not None else ""
            acc.print(
                f"epoch {epoch}: test accuracy {last['test_accuracy']:.1%}, deciles {last['test_decile_accuracy']:.1%}"
                f"{shown}"
            )
            improved = score is None or score > best
            if improved:
                best, best_metrics = (score if score is not None else best), last
            if acc.is_main_process:
                unwrapped = acc.unwrap_model(model)
                vectors = encode_texts(unwrapped, vocab, [songs[i].text for i in pairs.train_songs])
                ids = torch.tensor([artist_id[normalise(songs[i].artist)] for i in pairs.train_songs])
                for name in ("last", "best") if improved else ("last",):
                    save_similarity_checkpoint(
                        out / "checkpoints" / name, unwrapped, vocab, artists, vectors, ids,
                        state=full_precision_state(unwrapped, masters),
                        step=step, epoch=epoch, sources=list(cfg.data.sources), metrics=last,
                    )
            acc.wait_for_everyone()
    tracker.finish()
    return best_metrics or last


def evaluate(checkpoint: str, test_set: str | None = None, metrics_path: str | None = None) -> dict:
    """Score the held-out pairs saved by `train` (or another test_set.json). A reader: it never writes into the run
    directory; the result is appended as a JSON line to `metrics_path` when given."""
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
