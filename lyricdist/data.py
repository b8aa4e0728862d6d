"""Training data: memory-mapped token arrays laid out as contiguous streams for truncated BPTT.

As in char-rnn, the text is cut into `batch_size` equal streams; step c reads chunk c of every stream, so the
hidden state carried from one step to the next continues the same text. With W processes, rank r owns streams
[r*B/W, (r+1)*B/W): the global batch, and so the math, is the same for any W.

Songs are aligned to chunks: each song is padded (virtually; the corpus is never copied) to a multiple of
seq_len, so every song starts at a chunk boundary. The state is then reset only between chunks, and the fused
RNN kernel always runs over whole chunks; without alignment a large batch has a song start in almost every
column and the recurrence would have to be cut into one-character pieces. Padding and the boundary between two
songs are masked out of the loss: each song scores the prediction of its characters 2..n from its own text.
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
    mask: torch.Tensor  # [b, T] bool: which targets count (padding and song boundaries do not)
    reset: torch.Tensor  # [b] bool: zero this stream's state before the chunk (a song starts here)
    artist: torch.Tensor  # [b, T] int64 artist id of each input position
    n_global: int = 0  # training: targets scored in this chunk over all processes' streams


class SongLayout:
    """The virtual padded layout: song i occupies [pstart_i, pstart_i + plen_i), plen_i a multiple of seq_len."""

    def __init__(self, n_tokens: int, doc_starts: np.ndarray, doc_artists: np.ndarray, seq_len: int):
        starts = np.asarray(doc_starts, dtype=np.int64)
        artists = np.asarray(doc_artists, dtype=np.int64)
        if len(starts) == 0 or starts[0] != 0:  # text before the first recorded start is a document too
            starts = np.concatenate([[0], starts])
            artists = np.concatenate([[artists[0] if len(artists) else 0], artists])
        starts = np.minimum(starts, n_tokens)
        lengths = np.diff(np.append(starts, n_tokens))
        keep = lengths > 0
        self.starts, self.artists, self.lengths = starts[keep], artists[keep], lengths[keep]
        padded = -(-self.lengths // seq_len) * seq_len
        self.pstarts = np.concatenate([[0], np.cumsum(padded)[:-1]]).astype(np.int64)
        self.padded_len = int(padded.sum())
        self.n_targets = int(np.maximum(self.lengths - 1, 0).sum())

    def lookup(self, q: np.ndarray):
        """For padded positions q: (token index, input is real, target is real, song index)."""
        song = np.clip(np.searchsorted(self.pstarts, q, side="right") - 1, 0, None)
        off = q - self.pstarts[song]
        inside = (q < self.padded_len) & (off < self.lengths[song])
        target = inside & (off + 1 < self.lengths[song])
        return np.where(inside, self.starts[song] + off, 0), inside, target, song


def _batch(tokens: np.ndarray, layout: SongLayout, q: np.ndarray, first_chunk: bool) -> Batch:
    index, inside, target, song = layout.lookup(q)
    x = np.where(inside, tokens[index], 0).astype(np.int64)
    y = np.where(target, tokens[np.where(target, index + 1, 0)], 0).astype(np.int64)
    reset = (q[:, 0] == layout.pstarts[song[:, 0]]) | first_chunk
    return Batch(
        x=torch.from_numpy(x),
        y=torch.from_numpy(y),
        mask=torch.from_numpy(target),
        reset=torch.from_numpy(reset),
        artist=torch.from_numpy(layout.artists[song]),
    )


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
        self.layout = SongLayout(len(tokens), doc_starts, doc_artists, seq_len)
        self.stream_len = self.layout.padded_len // batch_size // seq_len * seq_len
        self.chunks_per_epoch = self.stream_len // seq_len
        if self.chunks_per_epoch < 1:
            raise LyricdistError(
                f"corpus too small: {len(tokens):,} training characters ({self.layout.padded_len:,} with songs "
                f"aligned to seq_len) but seq_len x batch_size needs {batch_size * seq_len:,}; lower "
                f"train.batch_size or train.seq_len, or add text"
            )
        self.tokens = tokens
        self.seq_len = seq_len
        self.batch_size = batch_size
        per_rank = batch_size // world_size
        self.streams = np.arange(rank * per_rank, (rank + 1) * per_rank, dtype=np.int64)
        self._all = np.arange(batch_size, dtype=np.int64)

    def _positions(self, streams: np.ndarray, chunk: int) -> np.ndarray:
        return streams[:, None] * self.stream_len + chunk * self.seq_len + np.arange(self.seq_len)

    def batch(self, chunk: int) -> Batch:
        b = _batch(self.tokens, self.layout, self._positions(self.streams, chunk), chunk == 0)
        b.n_global = int(b.mask.sum()) if len(self.streams) == self.batch_size else self.global_targets(chunk)
        return b

    def global_targets(self, chunk: int) -> int:
        """Targets scored in chunk c over all processes' streams: the loss is a mean over exactly these."""
        return int(self.layout.lookup(self._positions(self._all, chunk))[2].sum())


class EvalStreams:
    """The whole validation split as streams over the same aligned layout: every real target scored once."""

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
        self.tokens = tokens
        self.seq_len = seq_len
        self.layout = SongLayout(len(tokens), doc_starts, doc_artists, seq_len) if len(tokens) else None
        self.n_targets = self.layout.n_targets if self.layout else 0
        if not self.n_targets:
            self.num_chunks, self.streams, self.stream_len = 0, np.zeros(0, dtype=np.int64), 0
            return
        # The layout never depends on world_size (so neither does the loss); empty streams pad it to a multiple.
        chunks_total = self.layout.padded_len // seq_len
        real = max(1, min(num_streams, chunks_total))
        self.num_chunks = -(-chunks_total // real)
        self.stream_len = self.num_chunks * seq_len
        per_rank = -(-real // world_size)
        self.streams = np.arange(rank * per_rank, (rank + 1) * per_rank, dtype=np.int64)

    def __len__(self) -> int:
        return self.num_chunks

    def batch(self, chunk: int) -> Batch:
        q = self.streams[:, None] * self.stream_len + chunk * self.seq_len + np.arange(self.seq_len)
        return _batch(self.tokens, self.layout, q, chunk == 0)
