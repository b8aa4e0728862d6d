"""Training data: memory-mapped token arrays laid out as contiguous streams for truncated BPTT.

As in char-rnn, the text is cut into `batch_size` equal streams; step c reads chunk c of every stream, so the
hidden state carried from one step to the next continues the same text. With W processes, rank r owns streams
[r*B/W, (r+1)*B/W): the global batch, and so the math, is the same for any W. Those streams are one contiguous
range of the text, so each rank reads and builds only its own share (memory and set-up time ~ corpus / W).

Songs are aligned to chunks: each song is padded (virtually; the corpus is never copied) to a multiple of
seq_len, so every song starts at a chunk boundary. The state is then reset only between chunks, and the fused
RNN kernel always runs over whole chunks; without alignment a large batch has a song start in almost every
column and the recurrence would have to be cut into one-character pieces. Padding and the boundary between two
songs are masked out of the loss: each song scores the prediction of its characters 2..n from its own text.
"""

from __future__ import annotations

import mmap
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

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
BLOCK_CHARS = 1 << 22  # padded positions a rank builds at a time: bounds the temporaries of its tables


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


class _TokenReader:
    """Reads tokens[lo:hi] into a buffer, block by block, while a rank builds its tables (and times the reads).

    A corpus file is read with plain reads, not through its memory mapping: a page touched through a mapping stays
    in the process's resident memory until the mapping closes, so a rank that read its share that way would hold
    (for `ps`, for a cluster's memory limit) its share of the text besides its tables.
    """

    def __init__(self, tokens: np.ndarray):
        self.tokens, self.seconds, self._file, self._users = tokens, 0.0, None, 0
        whole_file = isinstance(tokens, np.memmap) and isinstance(tokens.base, mmap.mmap) and tokens.ndim == 1
        self.path = tokens.filename if whole_file and tokens.filename else None

    def __enter__(self) -> "_TokenReader":  # re-entrant: the file stays open until the outermost exit
        if self._users == 0 and self.path is not None:
            self._file = open(self.path, "rb", buffering=0)
            if os.fstat(self._file.fileno()).st_size < self.tokens.offset + self.tokens.nbytes:  # replaced since
                self._file.close()
                self._file = self.path = None  # read through the mapping, which still sees the mapped file
        self._users += 1
        return self

    def __exit__(self, *exc) -> None:
        self._users -= 1
        if self._users == 0 and self._file is not None:
            self._file.close()
            self._file = None

    def into(self, lo: int, out: np.ndarray) -> None:
        started = time.perf_counter()
        if self._file is None:
            out[:] = self.tokens[lo:lo + len(out)]
        else:
            self._file.seek(self.tokens.offset + lo * out.itemsize)
            view, done = memoryview(out).cast("B"), 0
            while done < len(view):
                n = self._file.readinto(view[done:])
                if not n:
                    raise LyricdistError(f"{self.path} ended early (truncated while training?); re-run prepare")
                done += n
        self.seconds += time.perf_counter() - started


class SongLayout:
    """The virtual padded layout: song i occupies [pstart_i, pstart_i + plen_i), plen_i a multiple of seq_len.

    Only per-song arrays live here: a rank's tables (`chunks`) and the global per-chunk target counts
    (`targets_per_chunk`) are computed from them without ever materialising the padded text.
    """

    def __init__(self, n_tokens: int, doc_starts: np.ndarray, doc_artists: np.ndarray, seq_len: int):
        starts = np.asarray(doc_starts, dtype=np.int64)
        artists = np.asarray(doc_artists, dtype=np.int64)
        if len(starts) == 0 or starts[0] != 0:  # text before the first recorded start is a document too
            starts = np.concatenate([[0], starts])
            artists = np.concatenate([[artists[0] if len(artists) else 0], artists])
        starts = np.minimum(starts, n_tokens)
        lengths = np.diff(np.append(starts, n_tokens))
        keep = lengths > 0
        self.seq_len, self.n_tokens = seq_len, int(n_tokens)
        self.starts, self.artists, self.lengths = starts[keep], artists[keep], lengths[keep]
        self.plengths = -(-self.lengths // seq_len) * seq_len
        self.pstarts = np.concatenate([[0], np.cumsum(self.plengths)[:-1]]).astype(np.int64)
        self.padded_len = int(self.plengths.sum())
        self.n_targets = int(np.maximum(self.lengths - 1, 0).sum())

    def targets_per_chunk(self, n_streams: int, chunks_per_stream: int) -> np.ndarray:
        """Scored targets in chunk c summed over streams 0..n_streams-1 (stream j = padded chunks j*C .. j*C+C-1).

        From the song lengths alone: every chunk of a song holds seq_len targets but its last, which lacks
        plen - len + 1 (its padding and the song's last character, which has no target); chunks past the layout
        (evaluation pads it to whole streams) hold none. O(songs), the same on every rank: no collective needed.
        """
        T, C = self.seq_len, chunks_per_stream
        c = np.arange(C, dtype=np.int64)
        real = np.clip(-(-(self.padded_len // T - c) // C), 0, n_streams)  # streams whose chunk c is in the layout
        last = (self.pstarts + self.plengths) // T - 1  # padded chunk index of each song's last chunk
        inside = last < n_streams * C
        lack = np.bincount(last[inside] % C, weights=(self.plengths - self.lengths + 1)[inside], minlength=C)
        return real * T - np.rint(lack).astype(np.int64)

    def chunks(self, tokens: np.ndarray, stream_lo: int, stream_hi: int, stream_len: int, x_dtype: np.dtype,
               y_dtype: np.dtype, reader: _TokenReader | None = None, block: int | None = None):
        """Streams [stream_lo, stream_hi) of the padded text cut into streams of stream_len, as step-major tables.

        Returns x, y [C, b, T] (y = IGNORE_INDEX where not scored), first [C, b] (a song starts at the chunk) and
        artist [C, b], for b = stream_hi - stream_lo streams and C = stream_len // T chunks. Only these streams
        are built: their padded positions are one contiguous range, read and written `block` characters at a time
        (a huge document is split like any other text), so the temporaries are bounded whatever the corpus and a
        rank's set-up is proportional to its share. Positions past the last song (evaluation streams pad the
        layout to a whole number of streams) are padding of the last song.
        """
        T, b = self.seq_len, stream_hi - stream_lo
        C = stream_len // T
        x, y = np.empty((C, b, T), dtype=x_dtype), np.empty((C, b, T), dtype=y_dtype)
        first = np.empty((C, b), dtype=bool)
        artist = np.empty((C, b), dtype=_smallest_int(int(self.artists.max()) if len(self.artists) else 0, False))
        cols = np.arange(T)
        step = max(1, (block or BLOCK_CHARS) // T)  # chunks per block
        with reader or _TokenReader(tokens) as read:
            for k0 in range(stream_lo * C, stream_hi * C, step):
                k = np.arange(k0, min(k0 + step, stream_hi * C), dtype=np.int64)  # padded chunk indices
                song = np.searchsorted(self.pstarts, k * T, side="right") - 1
                off = k * T - self.pstarts[song]  # the chunk's offset inside its song
                rem = self.lengths[song] - off  # the song's characters from the chunk's start on (<= 0: past it)
                src = np.minimum(self.starts[song] + off, self.n_tokens)  # token index of the chunk's start
                lo = int(src[0])
                text = np.zeros(int(src[-1]) - lo + T + 1, dtype=tokens.dtype)  # the block's text (+ lookahead)
                read.into(lo, text[:min(len(text), self.n_tokens - lo)])
                window = sliding_window_view(text, T)  # row i = text[i:i+T]: a chunk is one row, no index array
                xs, ys = window[src - lo], window[src - lo + 1].astype(y_dtype)
                part = np.flatnonzero(rem <= T)  # a song's last chunk (or padding): mask its tail
                if len(part):
                    left = rem[part, None]
                    xs[part] = np.where(cols < left, xs[part], 0)
                    ys[part] = np.where(cols < left - 1, ys[part], IGNORE_INDEX)
                c, j = k % C, k // C - stream_lo
                x[c, j], y[c, j] = xs, ys
                first[c, j] = off == 0
                artist[c, j] = self.artists[song]
        return x, y, first, artist


def _token_max(reader: _TokenReader, n: int) -> int:
    """The largest token id, read block by block (when the vocabulary size is not given)."""
    block = BLOCK_CHARS
    top, buf = 0, np.empty(min(n, block), dtype=reader.tokens.dtype)
    for lo in range(0, n, block):
        part = buf[:min(block, n - lo)]
        reader.into(lo, part)
        top = max(top, int(part.max()))
    return top


def fits_on_every_device(nbytes: int, free_bytes: int, max_device_fraction: float, device: torch.device) -> bool:
    """Whether tables of nbytes go to the device: only if they fit in max_device_fraction of the free memory of
    every process. Each process sees its own free memory (another job on its GPU, its own CUDA context), so
    deciding alone could put one rank's tables on its device and another's in pinned host memory: different step
    code paths and a start-up line that is true of rank 0 only. One all-reduce (MIN) at set-up makes it one
    decision; without a process group it is this process's own.
    """
    fits = int(nbytes <= max_device_fraction * free_bytes)
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return bool(fits)
    where = torch.device("cpu") if dist.get_backend() == "gloo" else torch.device(device)
    flag = torch.tensor([fits], dtype=torch.int32, device=where)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


class _ChunkTable:
    """Every (chunk, stream) batch of one process, computed once and kept on the device.

    x, y [C, b, T] and reset, artist [C, b] in the smallest integer dtypes that fit; step c is `table[c]`: tensor
    slicing, no numpy and no host-to-device copy. Only this process's streams are built (SongLayout.chunks), in
    host memory, then placed: on the device if they fit in `max_device_fraction` of its free memory on every
    process (agreed by one all-reduce), else in pinned host memory with the next chunk copied ahead on a side
    stream.
    """

    def __init__(self, layout: SongLayout, tokens: np.ndarray, stream_len: int, lo: int, hi: int,
                 vocab_size: int | None = None):
        started = time.perf_counter()
        with _TokenReader(tokens) as reader:
            top = vocab_size - 1 if vocab_size else _token_max(reader, len(tokens))
            x, y, first, artist = layout.chunks(tokens, lo, hi, stream_len, _smallest_int(top, signed=False),
                                                _smallest_int(top, signed=True), reader)
        first[0] = True  # each epoch starts every stream from a zero state
        self.tables = {"x": torch.from_numpy(x), "y": torch.from_numpy(y), "reset": torch.from_numpy(first),
                       "artist": torch.from_numpy(artist)}
        self.seconds = {"read": reader.seconds, "tables": time.perf_counter() - started - reader.seconds}
        self.nbytes = sum(t.numel() * t.element_size() for t in self.tables.values())
        self.device = torch.device("cpu")
        self.resident = True  # the tables are where the steps run: a step is a slice
        self.placement = "host memory (the device is the CPU)"
        self._next: tuple[int, dict] | None = None
        self._stream = None

    def to(self, device: torch.device, max_device_fraction: float = 0.5, free_bytes: int | None = None) -> "_ChunkTable":
        """Place the tables (free_bytes: this process's free device memory; by default asked of the device)."""
        started = time.perf_counter()
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:  # accelerate's single-GPU device is plain "cuda"
            device = torch.device("cuda", torch.cuda.current_device())
        host = {k: v.cpu() for k, v in self.tables.items()}  # no copy where they already are; one copy only
        self.device, self._next, self._stream = device, None, None
        if device.type == "cpu":
            self.tables, self.resident = host, True
            self.placement = "host memory (the device is the CPU)"
        elif device.type != "cuda" or fits_on_every_device(
                self.nbytes, torch.cuda.mem_get_info(device)[0] if free_bytes is None else free_bytes,
                max_device_fraction, device):
            self.tables, self.resident = {k: v.to(device) for k, v in host.items()}, True
            self.placement = f"{device} memory ({self.nbytes / 2**20:,.1f} MiB, built once)"
        else:
            self.tables, self.resident = {k: v.pin_memory() for k, v in host.items()}, False
            self._stream = torch.cuda.Stream(device)
            self.placement = (f"pinned host memory ({self.nbytes / 2**20:,.1f} MiB > {max_device_fraction:.0%} of "
                              f"free device memory on some process), next chunk prefetched")
        self.seconds["placement"] = time.perf_counter() - started
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
        vocab_size: int | None = None,
    ):
        """vocab_size sizes the tables' dtypes (default: the largest token, which reads the whole split)."""
        if batch_size % world_size:
            raise LyricdistError(
                f"train.batch_size={batch_size} is not divisible by the {world_size} processes; "
                f"set it to a multiple of {world_size}"
            )
        started = time.perf_counter()
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
        # host ints over every process's streams: the loss scale needs no sync, and no rank builds another's share
        self.n_targets = [int(n) for n in self.layout.targets_per_chunk(batch_size, self.chunks_per_epoch)]
        self._layout_s = time.perf_counter() - started
        self.table = _ChunkTable(self.layout, tokens, self.stream_len, rank * per_rank, (rank + 1) * per_rank,
                                 vocab_size)
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
    def setup_seconds(self) -> dict:
        """Seconds of each set-up phase of this process: layout, read (its share of the tokens), tables, placement."""
        return {"layout": self._layout_s, **self.table.seconds}

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
        vocab_size: int | None = None,
    ):
        started = time.perf_counter()
        self.seq_len = seq_len
        self.layout = SongLayout(len(tokens), doc_starts, doc_artists, seq_len) if len(tokens) else None
        self.n_targets = self.layout.n_targets if self.layout else 0
        self._layout_s = time.perf_counter() - started
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
        self.table = _ChunkTable(self.layout, tokens, self.stream_len, rank * per_rank, (rank + 1) * per_rank,
                                 vocab_size)

    def __len__(self) -> int:
        return self.num_chunks

    def to(self, device: torch.device, max_device_fraction: float = 0.5) -> "EvalStreams":
        if self.table is not None:  # n_targets is the split's: every process takes this branch alike
            self.table.to(device, max_device_fraction)
        return self

    @property
    def setup_seconds(self) -> dict:
        """Seconds of each set-up phase of this process (as StreamBatches.setup_seconds)."""
        return {"layout": self._layout_s, **(self.table.seconds if self.table is not None else {})}

    def batch(self, chunk: int) -> Batch:
        t = self.table[chunk]
        return Batch(t["x"], t["y"], t["reset"], t["artist"])  # evaluation divides by the split's n_targets
