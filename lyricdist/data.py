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
from .corpus_format import read_meta
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


MIN_CHUNKS_PER_EPOCH = 4  # below this the carried state barely matters and the skipped tail grows: warn
IGNORE_INDEX = -1  # the target of a position that is not scored (padding, a song's last character)


@dataclass
class Batch:
    x: torch.Tensor  # [b, T] input ids, in the smallest integer dtype that fits the vocabulary
    y: torch.Tensor  # [b, T] target ids, IGNORE_INDEX where not scored (padding and song boundaries)
    reset: torch.Tensor  # [b] bool: zero this stream's state before the chunk (a song starts here)
    artist: torch.Tensor  # [b] artist id of the chunk's song (songs are chunk-aligned: one song per chunk)
    n_global: int = 0  # targets scored in this chunk over all processes' streams

    @property
    def mask(self) -> torch.Tensor:
        return self.y != IGNORE_INDEX


def _smallest_int(max_value: int, signed: bool) -> np.dtype:
    """The smallest dtype holding 0..max_value (and -1 if signed). torch has few ops for uint16/32: skip them."""
    kinds = (np.int8, np.int16, np.int32, np.int64) if signed else (np.uint8, np.int16, np.int32, np.int64)
    return next(np.dtype(k) for k in kinds if np.iinfo(k).max >= max_value)


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
        self.seq_len = seq_len
        self.starts, self.artists, self.lengths = starts[keep], artists[keep], lengths[keep]
        padded = -(-self.lengths // seq_len) * seq_len
        self.pstarts = np.concatenate([[0], np.cumsum(padded)[:-1]]).astype(np.int64)
        self.padded_len = int(padded.sum())
        self.n_targets = int(np.maximum(self.lengths - 1, 0).sum())

    def chunks(self, tokens: np.ndarray, total_len: int, block: int = 1 << 22):
        """The padded text cut into total_len // seq_len chunks, built once with numpy, block by block of songs.

        Returns x, y [n_chunks, T] (y = IGNORE_INDEX where not scored), first [n_chunks] (a song starts at the
        chunk) and artist [n_chunks]. Positions past the last song (evaluation streams pad the layout to a whole
        number of streams) are padding of the last song.
        """
        T = self.seq_len
        n_chunks = total_len // T
        top = int(tokens.max()) if len(tokens) else 0
        x = np.zeros(total_len, dtype=_smallest_int(top, signed=False))
        y = np.full(total_len, IGNORE_INDEX, dtype=_smallest_int(top, signed=True))
        limit = min(total_len, self.padded_len)
        song_lo = 0
        while song_lo < len(self.starts):  # bounded memory: ~block tokens at a time
            song_hi = int(np.searchsorted(self.starts, self.starts[song_lo] + block, side="right"))
            song_hi = max(song_hi, song_lo + 1)
            s, n, p = self.starts[song_lo:song_hi], self.lengths[song_lo:song_hi], self.pstarts[song_lo:song_hi]
            lo, hi = int(s[0]), int(s[-1] + n[-1])
            dest = np.arange(lo, hi) + np.repeat(p - s, n)  # padded position of each token
            src = np.asarray(tokens[lo:hi])
            keep = dest < limit
            x[dest[keep]] = src[keep]
            not_last = np.ones(hi - lo, dtype=bool)
            not_last[np.cumsum(n) - 1] = False  # a song's last character has no target
            tgt = keep & not_last
            y[dest[tgt]] = src[np.flatnonzero(tgt) + 1]
            song_lo = song_hi
        chunk_song = np.repeat(np.arange(len(self.starts)), (-(-self.lengths // T)))
        chunk_song = np.concatenate([chunk_song, np.full(max(n_chunks - len(chunk_song), 0), len(self.starts) - 1)])
        chunk_song = chunk_song[:n_chunks]
        first = np.arange(n_chunks) * T == self.pstarts[chunk_song]
        return x.reshape(n_chunks, T), y.reshape(n_chunks, T), first, self.artists[chunk_song]


class _ChunkTable:
    """Every (chunk, stream) batch of one process, computed once and kept on the device.

    x, y [C, b, T] and reset, artist [C, b] in the smallest integer dtypes that fit; step c is `table[c]`: tensor
    slicing, no numpy and no host-to-device copy. Too large for the device (more than `max_device_fraction` of its
    free memory), it stays in pinned host memory and the next chunk is copied ahead on a side stream.
    """

    def __init__(self, layout: SongLayout, tokens: np.ndarray, n_streams: int, stream_len: int, lo: int, hi: int):
        T = layout.seq_len
        C = stream_len // T
        x, y, first, artist = layout.chunks(tokens, n_streams * stream_len)
        # flat chunk k = stream * C + c  ->  [C, streams, ...]
        x = x.reshape(n_streams, C, T)
        y = y.reshape(n_streams, C, T)
        self.n_targets = (y != IGNORE_INDEX).sum(axis=(0, 2)).astype(np.int64)  # per chunk, all streams
        reset = first.reshape(n_streams, C).copy()
        reset[:, 0] = True  # each epoch starts every stream from a zero state
        artist = artist.reshape(n_streams, C)
        art_dtype = _smallest_int(int(artist.max()) if artist.size else 0, signed=False)
        self.tables = {
            "x": torch.from_numpy(np.ascontiguousarray(x[lo:hi].transpose(1, 0, 2))),
            "y": torch.from_numpy(np.ascontiguousarray(y[lo:hi].transpose(1, 0, 2))),
            "reset": torch.from_numpy(np.ascontiguousarray(reset[lo:hi].T)),
            "artist": torch.from_numpy(np.ascontiguousarray(artist[lo:hi].T.astype(art_dtype))),
        }
        self.nbytes = sum(t.numel() * t.element_size() for t in self.tables.values())
        self.device = torch.device("cpu")
        self.resident = True  # the tables are where the steps run: a step is a slice
        self.placement = "host memory (the device is the CPU)"
        self._next: tuple[int, dict] | None = None
        self._stream = None

    def to(self, device: torch.device, max_device_fraction: float = 0.5) -> "_ChunkTable":
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:  # accelerate's single-GPU device is plain "cuda"
            device = torch.device("cuda", torch.cuda.current_device())
        host = {k: v.cpu() for k, v in self.tables.items()}  # no copy where they already are; one copy only
        self.device, self._next, self._stream = device, None, None
        if device.type == "cpu":
            self.tables, self.resident = host, True
            self.placement = "host memory (the device is the CPU)"
        elif device.type != "cuda" or self.nbytes <= max_device_fraction * torch.cuda.mem_get_info(device)[0]:
            self.tables, self.resident = {k: v.to(device) for k, v in host.items()}, True
            self.placement = f"{device} memory ({self.nbytes / 2**20:,.1f} MiB, built once)"
        else:
            self.tables, self.resident = {k: v.pin_memory() for k, v in host.items()}, False
            self._stream = torch.cuda.Stream(device)
            self.placement = (f"pinned host memory ({self.nbytes / 2**20:,.1f} MiB > {max_device_fraction:.0%} of "
                              f"free device memory), next chunk prefetched")
        return self

    def _copy(self, c: int) -> dict:
        return {k: v[c].to(self.device, non_blocking=True) for k, v in self.tables.items()}

    def __getitem__(self, c: int) -> dict:
        if self.resident:
            return {k: v[c] for k, v in self.tables.items()}
        if self._next is not None and self._next[0] == c:
            cur = self._next[1]
            torch.cuda.current_stream(self.device).wait_stream(self._stream)
            for t in cur.values():
                t.record_stream(torch.cuda.current_stream(self.device))
        else:
            cur = self._copy(c)
        nxt = (c + 1) % self.tables["x"].shape[0]
        with torch.cuda.stream(self._stream):  # copied while the current step runs
            self._next = (nxt, self._copy(nxt))
        return cur


class StreamBatches:
    """Chunk c of this rank's streams: the training batches of truncated BPTT, built once (see _ChunkTable)."""

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
        self.seq_len = seq_len
        self.batch_size = batch_size
        per_rank = batch_size // world_size
        self.streams = np.arange(rank * per_rank, (rank + 1) * per_rank, dtype=np.int64)
        self.table = _ChunkTable(
            self.layout, tokens, batch_size, self.stream_len, rank * per_rank, (rank + 1) * per_rank
        )
        self.n_targets = [int(n) for n in self.table.n_targets]  # host ints: the loss scale needs no sync
        # Truncated BPTT cuts the aligned text into batch_size streams of whole chunks: the tail is never trained.
        self.skipped_targets = self.layout.n_targets - sum(self.n_targets)

    def summary(self) -> str:
        """One line: the epoch's shape and what it leaves out, with a warning when the corpus is too small for it."""
        n = self.layout.n_targets
        line = (f"an epoch is {self.chunks_per_epoch:,} chunk(s) of {self.batch_size} streams x {self.seq_len} chars; "
                f"{self.skipped_targets:,} of {n:,} training characters ({self.skipped_targets / max(n, 1):.1%}) at "
                f"the tail are never trained")
        if self.chunks_per_epoch < MIN_CHUNKS_PER_EPOCH:
            line = (f"warning: {line}, and the state resets every {self.chunks_per_epoch} step(s), so truncated BPTT "
                    f"carries almost nothing; lower train.batch_size or train.seq_len (below "
                    f"{self.layout.padded_len // MIN_CHUNKS_PER_EPOCH // self.seq_len:,} streams at this seq_len) or add text")
        return line

    def to(self, device: torch.device, max_device_fraction: float = 0.5) -> "StreamBatches":
        self.table.to(device, max_device_fraction)
        return self

    @property
    def placement(self) -> str:
        return self.table.placement

    def batch(self, chunk: int) -> Batch:
        t = self.table[chunk]
        return Batch(t["x"], t["y"], t["reset"], t["artist"], self.n_targets[chunk])

    def global_targets(self, chunk: int) -> int:
        """Targets scored in chunk c over all processes' streams: the loss is a mean over exactly these."""
        return self.n_targets[chunk]


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
        self.seq_len = seq_len
        self.layout = SongLayout(len(tokens), doc_starts, doc_artists, seq_len) if len(tokens) else None
        self.n_targets = self.layout.n_targets if self.layout else 0
        if not self.n_targets:
            self.num_chunks, self.streams, self.stream_len, self.table = 0, np.zeros(0, dtype=np.int64), 0, None
            return
        # The layout never depends on world_size (so neither does the loss); empty streams pad it to a multiple.
        chunks_total = self.layout.padded_len // seq_len
        real = max(1, min(num_streams, chunks_total))
        self.num_chunks = -(-chunks_total // real)
        self.stream_len = self.num_chunks * seq_len
        per_rank = -(-real // world_size)
        self.streams = np.arange(rank * per_rank, (rank + 1) * per_rank, dtype=np.int64)
        n_streams = per_rank * world_size
        self.table = _ChunkTable(self.layout, tokens, n_streams, self.stream_len, rank * per_rank, (rank + 1) * per_rank)

    def __len__(self) -> int:
        return self.num_chunks

    def to(self, device: torch.device, max_device_fraction: float = 0.5) -> "EvalStreams":
        if self.table is not None:
            self.table.to(device, max_device_fraction)
        return self

    def batch(self, chunk: int) -> Batch:
        t = self.table[chunk]
        return Batch(t["x"], t["y"], t["reset"], t["artist"])  # evaluation divides by the split's n_targets
