"""Model and stream layout: the pieces whose math the distributed trainer relies on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lyricdist.data import IGNORE_INDEX, EvalStreams, SongLayout, StreamBatches
from lyricdist.errors import LyricdistError
from lyricdist.model import CharRNN, ModelConfig


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("embedding_dim", [0, 8])
def test_reset_starts_a_stream_from_zero_and_carried_state_continues(cell, embedding_dim):
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(cell=cell, num_layers=2, hidden_size=16, embedding_dim=embedding_dim), 11).eval()
    x = torch.randint(0, 11, (3, 12))
    state = tuple(torch.randn_like(s) for s in model.zero_state(3))
    reset = torch.tensor([False, True, False])
    with torch.no_grad():
        out, _ = model(x, state, reset)
        fresh, _ = model(x[1:2], None)
        carried, _ = model(x[[0, 2]], tuple(s[:, [0, 2]] for s in state))
        # two chunks with the state carried == one long chunk
        a, st = model(x[:, :5], None)
        b, _ = model(x[:, 5:], st)
        whole, _ = model(x, None)
    torch.testing.assert_close(out[1:2], fresh)
    torch.testing.assert_close(out[[0, 2]], carried)
    torch.testing.assert_close(torch.cat([a, b], 1), whole, atol=1e-5, rtol=1e-5)


def test_one_hot_input_is_the_default():
    model = CharRNN(ModelConfig(), 7)
    assert model.embed is None and model.rnn.input_size == 7


def _toy(n=1000, starts=(0, 130, 400, 777)):
    tokens = (np.arange(n) % 251).astype(np.uint8)
    return tokens, np.array(starts), np.arange(len(starts))


def _lookup(layout: SongLayout, q: np.ndarray):
    """The per-step reference (lyricdist before batches lived on the device): (token index, input real, target
    real, song) of padded positions q, by binary search over the song starts."""
    song = np.clip(np.searchsorted(layout.pstarts, q, side="right") - 1, 0, None)
    off = q - layout.pstarts[song]
    inside = (q < layout.padded_len) & (off < layout.lengths[song])
    target = inside & (off + 1 < layout.lengths[song])
    return np.where(inside, layout.starts[song] + off, 0), inside, target, song


def _reference_batch(tokens, layout, streams, stream_len, seq_len, chunk):
    q = streams[:, None] * stream_len + chunk * seq_len + np.arange(seq_len)
    index, inside, target, song = _lookup(layout, q)
    x = np.where(inside, tokens[index], 0).astype(np.int64)
    y = np.where(target, tokens[np.where(target, index + 1, 0)].astype(np.int64), IGNORE_INDEX)
    reset = (q[:, 0] == layout.pstarts[song[:, 0]]) | (chunk == 0)
    assert (song == song[:, :1]).all()  # songs are chunk-aligned: one song (so one artist) per chunk
    return x, y, reset, layout.artists[song[:, 0]], int(target.sum())


def _assert_batch_is(b, reference, where: str) -> None:
    for name, got, want in zip(("inputs", "targets", "resets", "artists"), (b.x, b.y, b.reset, b.artist), reference):
        assert torch.equal(got.to(torch.from_numpy(want).dtype), torch.from_numpy(want)), f"{name} of {where}"


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("vocab_top", [250, 3000])  # uint8 and int16 tables
def test_device_batches_equal_the_per_step_reference_for_every_chunk(world, vocab_top):
    """The tables built once equal what the per-step numpy batching gave, chunk by chunk, at any world size."""
    rng = np.random.default_rng(0)
    n = 5000
    tokens = rng.integers(0, vocab_top, n).astype(np.uint8 if vocab_top < 256 else np.uint16)
    starts = np.sort(rng.choice(np.arange(1, n), 40, replace=False))
    starts = np.concatenate([[0], starts])
    artists = rng.integers(0, 5, len(starts))
    B, T = 6, 7
    for r in range(world):
        sb = StreamBatches(tokens, starts, artists, batch_size=B, seq_len=T, rank=r, world_size=world)
        for c in range(sb.chunks_per_epoch):
            b = sb.batch(c)
            _assert_batch_is(b, _reference_batch(tokens, sb.layout, sb.streams, sb.stream_len, T, c),
                             f"chunk {c}, rank {r}/{world}")
            everyone = np.arange(B)
            assert b.n_global == _reference_batch(tokens, sb.layout, everyone, sb.stream_len, T, c)[4]
            assert b.x.element_size() <= 2 and b.y.element_size() <= 2 and b.artist.element_size() == 1
        ev = EvalStreams(tokens, starts, artists, num_streams=5, seq_len=T, rank=r, world_size=world)
        for c in range(len(ev)):
            _assert_batch_is(ev.batch(c), _reference_batch(tokens, ev.layout, ev.streams, ev.stream_len, T, c),
                             f"eval chunk {c}, rank {r}/{world}")


def test_rank_streams_partition_the_global_batch():
    tokens, starts, artists = _toy()
    whole = StreamBatches(tokens, starts, artists, batch_size=8, seq_len=10)
    parts = [StreamBatches(tokens, starts, artists, 8, 10, rank=r, world_size=4) for r in range(4)]
    for chunk in (0, 3, whole.chunks_per_epoch - 1):
        full = whole.batch(chunk)
        split = [p.batch(chunk) for p in parts]
        for field in ("x", "y", "mask", "reset", "artist"):
            assert torch.equal(getattr(full, field), torch.cat([getattr(s, field) for s in split]))
        assert whole.global_targets(chunk) == int(full.mask.sum()) == parts[1].global_targets(chunk)


def test_songs_start_at_chunk_boundaries_with_a_reset_and_nothing_crosses_songs():
    _, starts, artists = _toy()
    # each token is its offset inside its song: a target taken across a song boundary breaks y == x + 1
    tokens = (np.arange(1000) - np.asarray(starts)[np.searchsorted(starts, np.arange(1000), "right") - 1])
    tokens = tokens.astype(np.uint16)
    sb = StreamBatches(tokens, starts, artists, batch_size=2, seq_len=10)
    song_starts = set()
    for c in range(sb.chunks_per_epoch):
        b = sb.batch(c)
        assert torch.equal(b.y[b.mask], b.x[b.mask] + 1)  # every target is the next character of the same song
        for i in range(2):
            if b.reset[i] and c > 0:
                assert b.x[i, 0] == 0  # after the epoch's first chunk, a reset only happens where a song starts
            if b.x[i, 0] == 0:
                assert b.reset[i]  # and every song start is a chunk start with a reset
                song_starts.add(b.artist[i].item())  # carrying that song's own artist id
    reached = {k for k in range(len(starts)) if sb.layout.pstarts[k] % sb.stream_len < sb.chunks_per_epoch * 10
               and sb.layout.pstarts[k] < 2 * sb.stream_len}
    assert reached and reached <= song_starts


@pytest.mark.parametrize("world", [1, 2, 3])
def test_eval_streams_score_every_target_once(world):
    tokens, starts, artists = _toy(n=997)
    seen = []
    for r in range(world):
        ev = EvalStreams(tokens, starts, artists, num_streams=6, seq_len=16, rank=r, world_size=world)
        for c in range(len(ev)):
            b = ev.batch(c)
            index, _, target, _ = _lookup(ev.layout, ev.streams[:, None] * ev.stream_len + c * 16 + np.arange(16))
            assert torch.equal(torch.from_numpy(target), b.mask)
            seen.extend(index[target].tolist())
            assert torch.equal(b.y[b.mask].long(), torch.from_numpy(tokens[index[target] + 1].astype(np.int64)))
    bounds = list(starts) + [997]
    expected = [p for a, b in zip(bounds[:-1], bounds[1:]) for p in range(a, b - 1)]
    assert sorted(seen) == expected


def test_too_small_corpus_is_a_clear_error():
    tokens, starts, artists = _toy(n=100, starts=(0, 40))
    with pytest.raises(LyricdistError, match="corpus too small"):
        StreamBatches(tokens, starts, artists, batch_size=10, seq_len=16)
    with pytest.raises(LyricdistError, match="not divisible"):
        StreamBatches(tokens, starts, artists, batch_size=3, seq_len=4, world_size=2)


def test_eval_layout_does_not_depend_on_world_size():
    tokens, starts, artists = _toy(n=70, starts=(0, 33))  # fewer chunks than requested streams
    layouts = []
    for world in (1, 2, 3):
        streams = []
        for r in range(world):
            ev = EvalStreams(tokens, starts, artists, num_streams=8, seq_len=16, rank=r, world_size=world)
            streams += [tuple(ev.batch(c).x[i].tolist() for c in range(len(ev))) for i in range(len(ev.streams))
                        if any(ev.batch(c).mask[i].any() for c in range(len(ev)))]
        layouts.append(streams)
    assert layouts[0] == layouts[1] == layouts[2] and len(layouts[0]) >= 2


def test_a_corpus_of_a_newer_format_version_is_refused(demo_corpus, tmp_path):
    import json
    import shutil

    from lyricdist.corpus_format import CORPUS_VERSION
    from lyricdist.data import Corpus
    from lyricdist.errors import LyricdistError

    newer = tmp_path / "newer"
    shutil.copytree(demo_corpus, newer)
    meta = json.loads((newer / "meta.json").read_text())
    assert meta["version"] == CORPUS_VERSION
    Corpus(newer)  # the version this reader wrote
    meta["version"] = CORPUS_VERSION + 1
    (newer / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(LyricdistError, match="newer lyricdist"):
        Corpus(newer)


# ---- rank-local tables against the whole-corpus construction they replaced ---------------------------------------

def _old_whole_corpus_tables(tokens, starts, artists, n_streams, stream_len, T, lo, hi):
    """lyricdist's construction before rank-local tables, kept as the reference: the WHOLE padded text as x, y
    (every rank built every stream), the global per-chunk target counts summed from y, then rank streams [lo, hi)
    sliced out. Returns x, y [C, b, T], reset, artist [C, b], n_targets [C]."""
    layout = SongLayout(len(tokens), starts, artists, T)
    total_len = n_streams * stream_len
    n_chunks, C = total_len // T, stream_len // T
    top = int(tokens.max()) if len(tokens) else 0
    x = np.zeros(total_len, dtype=np.uint8 if top < 256 else np.int16)
    y = np.full(total_len, IGNORE_INDEX, dtype=np.int8 if top < 128 else np.int16)
    limit = min(total_len, layout.padded_len)
    s, n, p = layout.starts, layout.lengths, layout.pstarts
    dest = np.arange(len(tokens)) + np.repeat(p - s, n)  # padded position of each token
    keep = dest < limit
    x[dest[keep]] = tokens[keep]
    not_last = np.ones(len(tokens), dtype=bool)
    not_last[np.cumsum(n) - 1] = False  # a song's last character has no target
    tgt = keep & not_last
    y[dest[tgt]] = tokens[np.flatnonzero(tgt) + 1]
    chunk_song = np.repeat(np.arange(len(s)), -(-n // T))
    chunk_song = np.concatenate([chunk_song, np.full(max(n_chunks - len(chunk_song), 0), len(s) - 1)])[:n_chunks]
    first = np.arange(n_chunks) * T == p[chunk_song]
    x, y = x.reshape(n_streams, C, T), y.reshape(n_streams, C, T)
    n_targets = (y != IGNORE_INDEX).sum(axis=(0, 2))
    reset = first.reshape(n_streams, C).copy()
    reset[:, 0] = True
    artist = layout.artists[chunk_song].reshape(n_streams, C)
    return (x[lo:hi].transpose(1, 0, 2), y[lo:hi].transpose(1, 0, 2), reset[lo:hi].T, artist[lo:hi].T, n_targets)


def _corpus(kind: str, rng):
    """Token arrays with the shapes that break layouts: many songs, one long document, empty and 1-char songs."""
    if kind == "songs":
        n = 3000
        starts = np.sort(rng.choice(np.arange(1, n), 30, replace=False))
    elif kind == "one_document":
        n, starts = 4000, np.array([0])
    elif kind == "empty_and_short_songs":  # repeated starts are empty songs; 1-2 character songs have no chunk fill
        n = 1500
        starts = np.sort(np.concatenate([rng.choice(np.arange(1, n), 40, replace=False), [5, 5, 6, 7, 7, n, n]]))
    elif kind == "text_before_first_start":
        n, starts = 2500, np.array([700, 701, 1900])
    else:
        raise ValueError(kind)
    tokens = rng.integers(0, 90, n).astype(np.uint8)
    return tokens, starts, rng.integers(0, 7, len(starts))


def _assert_tables_equal(table, reference, where):
    for name, want in zip(("x", "y", "reset", "artist"), reference):
        got = table.tables[name].numpy()
        assert got.shape == want.shape, f"{name} shape of {where}"
        assert np.array_equal(got.astype(np.int64), want.astype(np.int64)), f"{name} of {where}"
    assert table.tables["x"].dtype == torch.uint8 and table.tables["y"].dtype == torch.int8, where


@pytest.mark.parametrize("kind", ["songs", "one_document", "empty_and_short_songs", "text_before_first_start"])
@pytest.mark.parametrize("seq_len", [1, 7, 16])
def test_rank_tables_equal_their_slice_of_the_whole_corpus_construction(kind, seq_len, monkeypatch):
    """Each rank's tables, built from its own streams only in blocks smaller than a song, stream or chunk, equal
    the rank's slice of the old whole-corpus tables; the analytic global target counts equal the old ones summed
    over every stream; and so for the validation streams, at world sizes 1..4."""
    import lyricdist.data as data

    rng = np.random.default_rng(seq_len)
    tokens, starts, artists = _corpus(kind, rng)
    B = 12
    for block in (5, 3 * seq_len + 1, 1 << 22):  # blocks cut inside chunks, songs and streams, or hold them all
        monkeypatch.setattr(data, "BLOCK_CHARS", block)
        for world in (1, 2, 3, 4):
            for r in range(world):
                sb = StreamBatches(tokens, starts, artists, batch_size=B, seq_len=seq_len, rank=r, world_size=world)
                per = B // world
                ref = _old_whole_corpus_tables(tokens, starts, artists, B, sb.stream_len, seq_len, r * per,
                                               (r + 1) * per)
                _assert_tables_equal(sb.table, ref[:4], f"{kind} T={seq_len} block={block} rank {r}/{world}")
                assert sb.n_targets == ref[4].tolist()
                assert sb.skipped_targets == sb.layout.n_targets - int(ref[4].sum())
                ev = EvalStreams(tokens, starts, artists, num_streams=5, seq_len=seq_len, rank=r, world_size=world)
                per = len(ev.streams)
                ref = _old_whole_corpus_tables(tokens, starts, artists, per * world, ev.stream_len, seq_len,
                                               r * per, (r + 1) * per)
                _assert_tables_equal(ev.table, ref[:4], f"eval {kind} T={seq_len} block={block} rank {r}/{world}")
                assert int(ref[4].sum()) == ev.n_targets  # every validation target is scored once


def test_global_target_counts_come_from_the_layout_alone():
    """The loss normaliser of chunk c over all streams, from the song lengths: equal to counting the whole
    corpus's targets, for eval-padded layouts (more streams than the text fills) too."""
    rng = np.random.default_rng(3)
    for kind in ("songs", "one_document", "empty_and_short_songs"):
        tokens, starts, artists = _corpus(kind, rng)
        for T, n_streams, C in ((7, 6, 20), (16, 4, 30), (1, 9, 100), (5, 50, 40)):
            layout = SongLayout(len(tokens), starts, artists, T)
            ref = _old_whole_corpus_tables(tokens, starts, artists, n_streams, C * T, T, 0, n_streams)[4]
            assert layout.targets_per_chunk(n_streams, C).tolist() == ref.tolist(), (kind, T, n_streams, C)


def _traced_peak(build) -> int:
    import gc
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    try:
        result = build()
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("shape", ["one_document", "many_songs"])
def test_building_a_rank_share_allocates_its_tables_plus_a_bounded_block(shape, tmp_path, monkeypatch):
    """Set-up memory of rank 1 of 4 over a memory-mapped corpus of 3 M characters: its own tables plus block-sized
    temporaries, never O(corpus). One huge document is no exception (it was: the old layout read a song whole).
    numpy's allocations are traced by tracemalloc; the assertions are on bytes, not time."""
    import lyricdist.data as data

    n, T, block = 3_000_000, 50, 1 << 16
    path = tmp_path / "train.bin"
    (np.arange(n) % 61).astype(np.uint8).tofile(path)
    tokens = np.memmap(path, dtype=np.uint8, mode="r", shape=(n,))
    starts = np.array([0]) if shape == "one_document" else np.arange(0, n, 1777)
    artists = np.arange(len(starts)) % 21
    monkeypatch.setattr(data, "BLOCK_CHARS", block)
    peak, sb = _traced_peak(lambda: StreamBatches(tokens, starts, artists, batch_size=8, seq_len=T, rank=1,
                                                  world_size=4, vocab_size=61))
    share = sb.table.nbytes
    assert share >= 2 * n // 4 * 0.95  # x and y of a quarter of the text, one byte each
    layout_bytes = 6 * 8 * len(sb.layout.starts)  # the per-song arrays every rank holds
    # the whole-corpus construction took x and y of all the text plus int64 positions: > 10 bytes a character
    assert peak - share - layout_bytes <= 16 * block, (peak, share)


def test_tables_are_read_from_the_file_not_through_the_mapping(tmp_path, monkeypatch):
    """A rank's share is read with plain reads, never through the corpus's memory map (a page touched through a
    mapping counts in the process's resident memory besides the tables), and gives the same tables."""
    n = 50_000
    path = tmp_path / "train.bin"
    in_memory = (np.arange(n) % 61).astype(np.uint8)
    in_memory.tofile(path)
    starts = np.arange(0, n, 999)
    want = StreamBatches(in_memory, starts, starts % 3, batch_size=4, seq_len=10, rank=1, world_size=2)
    tokens = np.memmap(path, dtype=np.uint8, mode="r", shape=(n,))
    monkeypatch.setattr(np.memmap, "__getitem__", lambda *a: (_ for _ in ()).throw(AssertionError("mapping read")))
    got = StreamBatches(tokens, starts, starts % 3, batch_size=4, seq_len=10, rank=1, world_size=2, vocab_size=61)
    for name in ("x", "y", "reset", "artist"):
        assert torch.equal(got.table.tables[name], want.table.tables[name])
    assert got.setup_seconds["read"] > 0 and set(got.setup_seconds) == {"layout", "read", "tables"}


PLACEMENT_WORKER = """
import json
import numpy as np, torch, torch.distributed as dist
from lyricdist.data import StreamBatches, fits_on_every_device

dist.init_process_group("gloo")
r, w = dist.get_rank(), dist.get_world_size()
tokens = (np.arange(20000) % 61).astype(np.uint8)
starts = np.arange(0, 20000, 777)
need = StreamBatches(tokens, starts, starts % 3, 8, 20, rank=r, world_size=w, vocab_size=61).table.nbytes
cases = {"rank0_short": need if r == 0 else 100 * need, "rank1_short": 100 * need if r == 0 else need,
         "room_everywhere": 100 * need, "room_nowhere": need}
rows = {case: [need <= 0.5 * free, fits_on_every_device(need, free, 0.5, torch.device("cpu"))]
        for case, free in cases.items()}
print("ROW " + json.dumps({"rank": r, "rows": rows}), flush=True)
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_ranks_that_see_different_free_memory_agree_on_placement(tmp_path):
    """2 gloo processes, each told a different free device memory: their own decisions differ, the placement
    decision (one all-reduce) is the same on both, and is 'device' only when the tables fit on every rank."""
    import json
    import os
    import subprocess
    import sys

    script = tmp_path / "placement.py"
    script.write_text(PLACEMENT_WORKER)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["rank"]: r["rows"] for r in (json.loads(l[4:]) for l in proc.stdout.splitlines() if l.startswith("ROW "))}
    assert set(rows) == {0, 1}
    assert rows[0]["rank0_short"] == [False, False] and rows[1]["rank0_short"] == [True, False]
    assert rows[0]["rank1_short"] == [True, False] and rows[1]["rank1_short"] == [False, False]
    assert rows[0]["room_everywhere"] == rows[1]["room_everywhere"] == [True, True]
    assert rows[0]["room_nowhere"] == rows[1]["room_nowhere"] == [False, False]
