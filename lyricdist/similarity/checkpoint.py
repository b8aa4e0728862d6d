"""Similarity checkpoints: model.safetensors + config.json + vocab.json + songs.safetensors (the reference song
vectors `score` compares against). Nothing is unpickled on load."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save_file

from ..checkpoint import portable_state
from ..errors import LyricdistError
from ..fileio import atomic_dir, atomic_write_json, read_dir_snapshot, readable_dir
from .config import SimilarityModelConfig
from .model import MaLSTM
from .ngram import NgramFeatures, NgramSiamese
from .tokenize import WordVocab

FORMAT = "lyricdist-similarity"


def build_model(cfg: SimilarityModelConfig, vocab: WordVocab | NgramFeatures) -> MaLSTM | NgramSiamese:
    return (NgramSiamese if cfg.kind == "ngram" else MaLSTM)(cfg, vocab_size=len(vocab))


@torch.no_grad()
def encode_texts(model: MaLSTM | NgramSiamese, vocab, texts: list[str], batch_size: int = 64) -> torch.Tensor:
    """[len(texts), hidden] song vectors on the CPU."""
    if isinstance(model, NgramSiamese):
        return model.encode_texts(vocab, texts)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(texts), batch_size):
        ids = [vocab.encode(t, model.cfg.max_len) for t in texts[start : start + batch_size]]
        lengths = torch.tensor([len(x) for x in ids])
        padded = torch.zeros(len(ids), int(lengths.max()), dtype=torch.long)
        for row, x in enumerate(ids):
            padded[row, : len(x)] = torch.tensor(x)
        out.append(model.encode(padded.to(device), lengths).float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, model.cfg.hidden_size)


def save_similarity_checkpoint(
    path: str | Path,
    model: MaLSTM,
    vocab: WordVocab,
    artists: list[str],
    song_vectors: torch.Tensor,
    song_artists: torch.Tensor,
    state: dict[str, torch.Tensor] | None = None,
    **info: Any,
) -> Path:
    """Write the checkpoint directory atomically; song_artists[i] indexes `artists` for song_vectors[i]. `state`
    replaces model.state_dict() (the trainer passes its fp32 masters); weights are saved in fp32."""
    path = Path(path)
    state = portable_state(model, state)
    with atomic_dir(path) as tmp:
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        save_file(
            {"vectors": song_vectors.float().contiguous(), "artist_ids": song_artists.long().contiguous()},
            str(tmp / "songs.safetensors"),
        )
        atomic_write_json(tmp / "vocab.json", vocab.to_json())
        atomic_write_json(
            tmp / "config.json",
            {"format": FORMAT, "model": asdict(model.cfg), "vocab_size": len(vocab), "artists": artists, **info},
        )
    return path


def checkpoint_dir(path: str | Path) -> Path:
    """The checkpoint directory `path` names: itself, or a run's checkpoints/best (the best by validation), else
    checkpoints/last. Read it with load_similarity_checkpoint, which never modifies it (its trainer may be saving
    into it right now)."""
    path = Path(path)
    if path.is_dir() and not (path / "config.json").exists():
        best = path / "checkpoints" / "best"
        return best if best.is_dir() else path / "checkpoints" / "last"
    return path


def load_similarity_checkpoint(path: str | Path) -> tuple[MaLSTM | NgramSiamese, WordVocab | NgramFeatures, dict, dict]:
    """(model in eval mode on CPU, vocabulary, config.json, {"vectors", "artist_ids"} of the reference songs).

    All files come from one save even while the trainer replaces the checkpoint (see fileio.read_dir_snapshot)."""
    where = checkpoint_dir(path)
    names = ("config.json", "vocab.json", "model.safetensors", "songs.safetensors")
    path, files = read_dir_snapshot(lambda: readable_dir(where), names)
    if not files or "config.json" not in files:
        raise LyricdistError(f"similarity checkpoint {str(where)!r} not found; give a `similarity train` out_dir")
    for name in names:
        if name not in files:
            raise LyricdistError(f"similarity checkpoint {path} is missing {name}; it is incomplete")
    try:
        config = json.loads(files["config.json"])
        if config.get("format") != FORMAT:
            raise ValueError(f"format is {config.get('format')!r}, not {FORMAT!r}")
        known = {f.name for f in fields(SimilarityModelConfig)}
        model_cfg = SimilarityModelConfig(**{k: v for k, v in config["model"].items() if k in known})
        vocab_json = json.loads(files["vocab.json"])
        vocab = (NgramFeatures if model_cfg.kind == "ngram" else WordVocab).from_json(vocab_json)
        state, songs = load(files["model.safetensors"]), load(files["songs.safetensors"])
    except (ValueError, KeyError, TypeError, AttributeError, SafetensorError) as e:
        raise LyricdistError(f"similarity checkpoint {path} is corrupted or not one ({e})") from None
    model = build_model(model_cfg, vocab)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        last_line = str(e).strip().splitlines()[-1].strip()
        raise LyricdistError(f"checkpoint {path} does not match its config.json ({last_line})") from None
    return model.eval(), vocab, config, songs
