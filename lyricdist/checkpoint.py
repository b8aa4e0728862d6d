"""Portable checkpoints: model.safetensors + config.json + vocab.json. Nothing is unpickled on load."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save_file

from .errors import LyricdistError
from .fileio import atomic_dir, atomic_write_json, read_dir_snapshot, readable_dir
from .refs import CHECKPOINT_FORMAT, local_checkpoint_dir
from .model import CharRNN, ModelConfig
from .vocab import Vocab



def portable_state(model: torch.nn.Module, state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """`state` (default: the model's) as CPU tensors, floating point in fp32: what a checkpoint file holds."""
    state = model.state_dict() if state is None else state
    return {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).contiguous().clone()
            for k, v in state.items()}


def artist_index(artists: list[str], name: str) -> int | None:
    """Where `name` is in a checkpoint's artist list, ignoring case; None when it is not there."""
    folded = name.casefold()
    return next((i for i, a in enumerate(artists) if a.casefold() == folded), None)


def save_checkpoint(
    path: str | Path,
    model: CharRNN,
    vocab: Vocab,
    artists: list[str] | None = None,
    state: dict[str, torch.Tensor] | None = None,
    **info: Any,
) -> Path:
    """Write a checkpoint directory atomically (a kill mid-save leaves the previous one intact).

    `state` replaces model.state_dict() (a trainer passes its fp32 master weights); weights are saved in fp32."""
    path = Path(path)
    state = portable_state(model, state)
    with atomic_dir(path) as tmp:
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        atomic_write_json(tmp / "vocab.json", vocab.to_json())
        atomic_write_json(
            tmp / "config.json",
            {
                "format": CHECKPOINT_FORMAT,
                "model": asdict(model.cfg),
                "vocab_size": model.vocab_size,
                "num_artists": model.num_artists,
                "artists": list(artists or []),
                **info,
            },
        )
    return path


class BestAndLast:
    """The checkpoint policy of both trainers: OUT_DIR/checkpoints/last at every evaluation, .../best whenever the
    validation metric improves (lower is better; None, e.g. no validation split, never makes a `best`)."""

    def __init__(self, out_dir: Path, best: float | None = None):
        self.root = Path(out_dir) / "checkpoints"
        self.best = math.inf if best is None else best

    def update(self, metric: float | None, write: Callable[[Path], Any]) -> list[str]:
        """Write `last` (and `best` if improved) with `write(dir)`; returns the artifact aliases to log."""
        write(self.root / "last")
        if metric is None or not metric < self.best:
            return ["latest"]
        self.best = metric
        write(self.root / "best")
        return ["latest", "best"]

    @property
    def best_or_none(self) -> float | None:
        return None if math.isinf(self.best) else self.best


def _locate(path: Path) -> Path:
    """The directory to read for `path` (a run's out_dir: its best, else last), changing nothing."""
    if path.is_dir() and not (path / "config.json").exists():
        for name in ("best", "last"):
            cand = readable_dir(path / "checkpoints" / name)
            if (cand / "config.json").exists():
                return cand
    return readable_dir(path)


def _not_found(path: Path) -> LyricdistError:
    return LyricdistError(f"checkpoint {str(path)!r} not found; give OUT_DIR/checkpoints/best (or last)")


def resolve_checkpoint_dir(path: str | Path) -> Path:
    """Accept a checkpoint directory, a run's out_dir (best, else last), a wandb artifact download, or a remote
    reference (hf:REPO_ID[@REVISION], wandb:ENTITY/PROJECT/NAME:ALIAS; downloaded once, see lyricdist.refs)."""
    path = _locate(local_checkpoint_dir(path))
    if not path.exists():
        raise _not_found(path)
    return path


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[CharRNN, Vocab, dict]:
    """Load (model in eval mode, vocabulary, config.json contents). Works on CPU for GPU-trained weights.
    `path` is anything resolve_checkpoint_dir accepts.

    All files come from one save even while a trainer replaces the checkpoint (see fileio.read_dir_snapshot)."""
    names, given = ("config.json", "vocab.json", "model.safetensors"), local_checkpoint_dir(path)
    path, files = read_dir_snapshot(lambda: _locate(given), names)
    if files is None:
        raise _not_found(path)
    for name in names:
        if name not in files:
            raise LyricdistError(f"checkpoint {path} is missing {name}; it is incomplete or not a lyricdist checkpoint")
    try:
        config = json.loads(files["config.json"])
        if config.get("format") != CHECKPOINT_FORMAT:
            raise ValueError("not a lyricdist checkpoint")
        known = {f.name for f in fields(ModelConfig)}
        model_cfg = ModelConfig(**{k: v for k, v in config["model"].items() if k in known})
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise LyricdistError(f"checkpoint {path}/config.json is corrupted ({e})") from None
    try:
        vocab = Vocab.from_json(json.loads(files["vocab.json"]))
    except ValueError as e:
        raise LyricdistError(f"checkpoint {path}/vocab.json is corrupted ({e}); use another checkpoint") from None
    if len(vocab) != config.get("vocab_size"):
        raise LyricdistError(
            f"vocabulary mismatch in {path}: vocab.json has {len(vocab)} characters, the model {config.get('vocab_size')}"
        )
    try:
        state = load(files["model.safetensors"])
    except (SafetensorError, ValueError) as e:
        raise LyricdistError(f"checkpoint {path}/model.safetensors is corrupted ({e}); use another checkpoint") from None
    model = CharRNN(model_cfg, vocab_size=len(vocab), num_artists=int(config.get("num_artists", 0)))
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise LyricdistError(f"checkpoint {path} does not match its config.json ({first[-1].strip()})") from None
    model.to(device).eval()
    return model, vocab, config
