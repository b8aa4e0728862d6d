"""Model and stream layout: the pieces whose math the distributed trainer relies on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lyricdist.data import EvalStreams, StreamBatches, _reset_mask
from lyricdist.errors import LyricdistError
from lyricdist.model import CharRNN, ModelConfig


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("embedding_dim", [0, 8])
def test_reset_segments_match_step_by_step(cell, embedding_dim):
    """Cutting the sequence at song starts gives the same outputs as zeroing the state char by char."""
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(cell=cell, num_layers=2, hidden_size=16, embedding_dim=embedding_dim), 11).eval()
    B, T = 3, 12
    x = torch.randint(0, 11, (B, T))
    reset = torch.zeros(B, T, dtype=torch.bool)
    reset[0, 4] = reset[1, 4] = reset[2, 9] = reset[1, 0] = True
    state = model.zero_state(B)
    state = tuple(torch.randn_like(s) for s in state)
    with torch.no_grad():
        fast, fast_state = model(x, state, reset)
        outs, st = [], state
        for t in range(T):
            keep = (~reset[:, t]).float()[None, :, None]
            st = tuple(s * keep for s in st)
            o, st = model(x[:, t : t + 1], st)
            outs.append(o)
        slow = torch.cat(outs, dim=1)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    for a, b in zip(fast_state, st):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_reset_forgets_the_past():
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(num_layers=1, hidden_size=8), 5).eval()
    x = torch.randint(0, 5, (1, 6))
    reset = torch.zeros(1, 6, dtype=torch.bool)
    reset[0, 3] = True
    with torch.no_grad():
        a, _ = model(x, tuple(torch.randn(1, 1, 8) for _ in range(2)), reset)
        b, _ = model(x[:, 3:], None)
    torch.testing.assert_close(a[:, 3:], b)


def test_one_hot_input_is_the_default():
    model = CharRNN(ModelConfig(), 7)
    assert model.embed is None and model.rnn.input_size == 7


def _toy(n=1000, starts=(0, 130, 400, 777)):
    tokens = (np.arange(n) % 251).astype(np.uint8)
    return tokens, np.array(starts), np.arange(len(starts))


def test_rank_streams_partition_the_global_batch():
    tokens, starts, artists = _toy()
    whole = StreamBatches(tokens, starts, artists, batch_size=8, seq_len=10)
    parts = [StreamBatches(tokens, starts, artists, 8, 10, rank=r, world_size=4) for r in range(4)]
    for chunk in (0, 3, whole.chunks_per_epoch - 1):
        full = whole.batch(chunk)
        split = [p.batch(chunk) for p in parts]
        for field in ("x", "y", "reset", "artist"):
            assert torch.equal(getattr(full, field), torch.cat([getattr(s, field) for s in split]))
    # consecutive chunks continue the same text: the carried state sees contiguous characters
    b0, b1 = whole.batch(0), whole.batch(1)
    assert torch.equal(b0.y[:, -1], b1.x[:, 0])
    assert torch.equal(b0.x[:, 1:], b0.y[:, :-1])


def test_resets_mark_song_starts():
    tokens, starts, artists = _toy()
    sb = StreamBatches(tokens, starts, artists, batch_size=4, seq_len=10)  # stream_len 250
    marked = set()
    for c in range(sb.chunks_per_epoch):
        b = sb.batch(c)
        for s, t in zip(*np.nonzero(b.reset.numpy())):
            marked.add(int(sb.streams[s] * sb.stream_len + c * 10 + t))
    inside = {int(p) for p in starts if p % sb.stream_len < sb.chunks_per_epoch * 10}
    stream_starts = {int(s * sb.stream_len) for s in range(4)}
    assert marked == inside | stream_starts
    # artist id follows the song each character belongs to
    b = sb.batch(13)  # positions 130..139 in stream 0: song 1 starts at 130
    assert b.artist[0].tolist() == [1] * 10


def test_reset_mask_vectorised():
    m = _reset_mask(np.array([5, 12, 20]), np.array([0, 10, 30]), 10)
    assert np.flatnonzero(m[0]).tolist() == [5] and np.flatnonzero(m[1]).tolist() == [2] and not m[2].any()


@pytest.mark.parametrize("world", [1, 2, 3])
def test_eval_streams_score_every_target_once(world):
    tokens, starts, artists = _toy(n=997)
    seen = []
    for r in range(world):
        ev = EvalStreams(tokens, starts, artists, num_streams=6, seq_len=16, rank=r, world_size=world)
        for c in range(len(ev)):
            b = ev.batch(c)
            pos = ev.lo[:, None] + c * 16 + np.arange(16)
            seen.extend(pos[b.mask.numpy()].tolist())
            assert torch.equal(b.y[b.mask], torch.from_numpy(tokens[pos[b.mask.numpy()] + 1].astype(np.int64)))
    assert sorted(seen) == list(range(996))


def test_too_small_corpus_is_a_clear_error():
    tokens, starts, artists = _toy(n=100)
    with pytest.raises(LyricdistError, match="corpus too small"):
        StreamBatches(tokens, starts, artists, batch_size=10, seq_len=16)
    with pytest.raises(LyricdistError, match="not divisible"):
        StreamBatches(tokens, starts, artists, batch_size=3, seq_len=4, world_size=2)


def test_eval_layout_does_not_depend_on_world_size():
    tokens, starts, artists = _toy(n=70)  # only 4 chunks of 16: fewer streams than requested
    layouts = []
    for world in (1, 2, 3):
        spans = set()
        for r in range(world):
            ev = EvalStreams(tokens, starts, artists, num_streams=8, seq_len=16, rank=r, world_size=world)
            spans |= {(int(a), int(b)) for a, b in zip(ev.lo, ev.hi) if b > a}
        layouts.append(spans)
    assert layouts[0] == layouts[1] == layouts[2]


def test_bf16_autocast_runs_the_rnn_in_bf16_and_trains_fp32_weights():
    """cuDNN's autocast would use float16 for RNNs; we cast to bf16 ourselves and gradients reach fp32 weights."""
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(num_layers=2, hidden_size=16), 9)
    x = torch.randint(0, 9, (4, 10))
    reset = torch.zeros(4, 10, dtype=torch.bool)
    reset[2, 5] = True
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, state = model(x, None, reset)
    assert state[0].dtype == torch.bfloat16
    logits.float().sum().backward()
    assert model.rnn.weight_hh_l1.dtype == torch.float32 and model.rnn.weight_hh_l1.grad.abs().sum() > 0
    with torch.no_grad():
        ref, _ = model(x, None, reset)
    torch.testing.assert_close(logits.float(), ref, atol=0.1, rtol=0.05)
