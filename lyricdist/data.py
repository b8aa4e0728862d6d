"""Training data: memory-mapped token arrays laid out as contiguous streams for truncated BPTT.

As in char-rnn, the token array is cut into `batch_size` equal streams; step c reads chunk c of every stream,
so the hidden state carried from one step to the next continues the same text. With W processes, rank r owns
streams [r*B/W, (r+1)*B/W): the global batch, and so the math, is the same for any W.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import LyricdistError
from .prepare import read_meta
from .vocab import Vocab


class Corpus:
    """A prepared corpus directory, memory-mapped."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise LyricdistError(
                f"corpus {str(self.path)!r} not found; create it with `lyricdist prepare SOURCE --out {self.path}`"
            )
        self.meta = read_meta(self.path)
        self.vocab = Vocab.load(self.path / "vocab.json")
        self.dtype = np.dtype(self.meta["dtype"])
        self.artists: list[str] = list(self.meta.get("artists", []))

    def tokens(self, split: str) -> np.ndarray:
        path = self.path / f"{split}.bin"
        n = self.meta["splits"][split]["chars"]
        if not path.is_file() or path.stat().st_size != n * self.dtype.itemsize:
            raise LyricdistError(f"{path} is missing or truncated; re-run `lyricdist prepare`")
        if n == 0:
            return np.zeros(0, dtype=self.dtype)
        return np.memmap(path, dtype=self.dtype, mode="r", shape=(n,))

    def docs(self, split: str) -> np.ndarray:
        """int64 [n_docs, 2]: (start offset, artist id)."""
        try:
            return np.load(self.path / f"{split}_docs.npy", allow_pickle=False).reshape(-1, 2)
        except (FileNotFoundError, ValueError) as e:
            raise LyricdistError(f"{self.path}/{split}_docs.npy is missing or corrupted ({e}); re-run prepare") from None

    def doc_artist_ids(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        d = self.docs(split)
        return d[:, 0], d[:, 1]


@dataclass
class Batch:
    x: torch.Tensor  # [b, T] int64 inputs
    y: torch.Tensor  # [b, T] int64 targets
    reset: torch.Tensor  # [b, T] bool: zero the state before reading x[:, t] (a song starts there)
    artist: torch.Tensor  # [b, T] int64 artist id of each input position
    mask: torch.Tensor | None = None  # [b, T] bool: which targets count (validation padding)


def _reset_mask(starts: np.ndarray, lo: np.ndarray, length: int) -> np.ndarray:
    """reset[b, t] is True where a document starts at lo[b] + t."""
    reset = np.zeros((len(lo), length), dtype=bool)
    left = np.searchsorted(starts, lo, side="left")
    right = np.searchsorted(starts, lo + length, side="left")
    for b in np.flatnonzero(right > left):
        reset[b, starts[left[b] : right[b]] - lo[b]] = True
    return reset


def _artist_at(starts: np.ndarray, artist_ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
    if len(starts) == 0:
        return np.zeros_like(positions)
    idx = np.searchsorted(starts, positions, side="right") - 1
    return artist_ids[np.clip(idx, 0, None)]


class StreamBatches:
    """Chunk c of this rank's streams: the training batches of truncated BPTT."""

    def __init__(
        self,
        tokens: np.ndarray,
        doc_starts: np.ndarray,
        doc_artists: np.ndarray,
        batch_size: int,
        seq_len: int,
        rank: int = 0,
        world_size: int = 1,
    ):
        if batch_size % world_size:
            raise LyricdistError(
                f"train.batch_size={batch_size} is not divisible by the {world_size} processes; "
                f"set it to a multiple of {world_size}"
            )
        n = len(tokens)
        self.stream_len = n // batch_size
        self.chunks_per_epoch = (self.stream_len - 1) // seq_len
        if self.chunks_per_epoch < 1:
            need = batch_size * (seq_len + 1)
            raise LyricdistError(
                f"corpus too small: {n:,} training characters, but seq_len x batch_size needs at least {need:,}; "
                f"lower train.batch_size or train.seq_len, or add text"
            )
        self.tokens = tokens
        self.starts = np.asarray(doc_starts, dtype=np.int64)
        self.artists = np.asarray(doc_artists, dtype=np.int64)
        self.seq_len = seq_len
        per_rank = batch_size // world_size
        self.streams = np.arange(rank * per_rank, (rank + 1) * per_rank, dtype=np.int64)
        self.chars_per_epoch = self.chunks_per_epoch * seq_len * batch_size

    def batch(self, chunk: int) -> Batch:
        T = self.seq_len
        lo = self.streams * self.stream_len + chunk * T
        idx = lo[:, None] + np.arange(T + 1)
        window = torch.from_numpy(np.asarray(self.tokens[idx], dtype=np.int64))
        reset = _reset_mask(self.starts, lo, T)
        reset[:, 0] |= chunk == 0
        artist = _artist_at(self.starts, self.artists, idx[:, :T])
        return Batch(
            x=window[:, :T], y=window[:, 1:], reset=torch.from_numpy(reset), artist=torch.from_numpy(artist)
        )


class EvalStreams:
    """The whole validation split as `num_streams` padded streams, so every target is scored exactly once."""

    def __init__(
        self,
        tokens: np.ndarray,
        doc_starts: np.ndarray,
        doc_artists: np.ndarray,
        num_streams: int,
        seq_len: int,
        rank: int = 0,
        world_size: int = 1,
    ):
        n_targets = max(len(tokens) - 1, 0)
        # The layout never depends on world_size (so neither does the loss); empty streams pad it to a multiple.
        num_streams = max(1, min(num_streams, n_targets // max(seq_len, 1)))
        bounds = np.linspace(0, n_targets, num_streams + 1).round().astype(np.int64)
        lo, hi = bounds[:-1], bounds[1:]
        padded = -(-num_streams // world_size) * world_size
        lo = np.concatenate([lo, np.full(padded - num_streams, n_targets, dtype=np.int64)])
        hi = np.concatenate([hi, np.full(padded - num_streams, n_targets, dtype=np.int64)])
        self.tokens = tokens
        self.starts = np.asarray(doc_starts, dtype=np.int64)
        self.artists = np.asarray(doc_artists, dtype=np.int64)
        self.seq_len = seq_len
        per_rank = padded // world_size
        mine = slice(rank * per_rank, (rank + 1) * per_rank)
        self.lo = lo[mine]
        self.hi = hi[mine]
        longest = int((hi - lo).max()) if n_targets else 0
        self.num_chunks = -(-longest // seq_len) if n_targets else 0
        self.n_targets = n_targets

    def __len__(self) -> int:
        return self.num_chunks

    def batch(self, chunk: int) -> Batch:
        T = self.seq_len
        pos = self.lo[:, None] + chunk * T + np.arange(T)  # input positions
        mask = pos < self.hi[:, None]
        safe = np.where(mask, pos, 0)
        x = np.asarray(self.tokens[safe], dtype=np.int64)
        y = np.asarray(self.tokens[np.where(mask, pos + 1, 0)], dtype=np.int64)
        reset = _reset_mask(self.starts, self.lo + chunk * T, T)
        if chunk == 0:
            reset[:, 0] = True
        artist = _artist_at(self.starts, self.artists, safe)
        return Batch(
            x=torch.from_numpy(x),
            y=torch.from_numpy(y),
            reset=torch.from_numpy(reset),
            artist=torch.from_numpy(artist),
            mask=torch.from_numpy(mask),
        )
