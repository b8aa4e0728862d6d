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
