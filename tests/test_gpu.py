"""The GPU path on a real GPU: cuDNN's fused RNN under every precision the trainer picks, on weights that stay in the
one buffer cuDNN reads (no per-forward copies, no warning), no host sync between log steps, masters, the pinned-host
fallback. Skipped (with the reason) on machines without CUDA, such as CI; scripts/gpu_check.py runs this file."""

from __future__ import annotations

import warnings

import pytest
import torch

from conftest import tiny_config
from lyricdist.precision import NOT_ONE_BUFFER, OpCounter, RNNShape, choose_precision, weights_in_one_buffer
from lyricdist.train import Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
GPU = ["--train.cpu=false", "--samples.enabled=false", "--tracking.backend=none", "--model.num_layers=2"]
# The presets' recurrent shapes (cuDNN's standard algorithm, not the persistent small-hidden one) with dropout.
PRESET_LIKE = ["--model.num_layers=4", "--model.hidden_size=256", "--model.dropout=0.2", "--train.batch_size=128",
               "--train.seq_len=40"]


def _rnn(trainer):
    return trainer.acc.unwrap_model(trainer.model).rnn


def _no_copy_warning(caught) -> None:
    copies = [str(w.message) for w in caught if NOT_ONE_BUFFER in str(w.message)]
    assert not copies, f"cuDNN copied the RNN weights: {copies[0]}"


@pytest.mark.parametrize("request_", ["auto", "no", "bf16", "fp16"])
def test_cudnn_rnn_is_fused_on_its_own_weights_in_one_buffer(demo_corpus, tmp_path, request_):
    counts = {}
    for seq_len in (10, 20):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer = Trainer(tiny_config(demo_corpus, tmp_path / f"{seq_len}", *GPU, f"--train.seq_len={seq_len}",
                                          f"--train.mixed_precision={request_}"))
            assert trainer.acc.device.type == "cuda" and trainer.precision.fused, trainer.precision.describe()
            assert trainer.batches.table.tables["x"].device.type == "cuda" and trainer.batches.table.resident
            trainer.train_step()
            with OpCounter() as c:
                trainer.train_step()
        _no_copy_warning(caught)
        counts[seq_len] = c.total
        assert any("cudnn" in k for k in c.rnn_kernels()), c.rnn_kernels()
        rnn = _rnn(trainer)
        assert weights_in_one_buffer(rnn), f"{request_}: RNN parameters outside the shared storage"
        seen = {t.data_ptr() for _, ts in c.rnn_calls for t in ts}
        assert all(p.data_ptr() in seen for p in rnn.parameters()), "the kernel did not run on the RNN's own weights"
    assert counts[10] == counts[20], counts


@pytest.mark.parametrize("request_", ["bf16", "fp16"])
def test_preset_shape_with_dropout_stays_in_one_buffer_through_resume(demo_corpus, tmp_path, request_):
    """4 x 256 with dropout (the standard cuDNN algorithm): fused, one buffer after set-up, after a save and after
    a resume, and the 16-bit weights are always the fp32 masters rounded."""
    args = [*GPU, *PRESET_LIKE, f"--train.mixed_precision={request_}", "--train.max_steps=4", "--train.save_every=2",
            "--train.eval_every=2"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = Trainer(tiny_config(demo_corpus, tmp_path / "run", *args))
        assert first.precision.low_precision and first.precision.fused, first.precision.describe()
        first.fit()
        assert weights_in_one_buffer(_rnn(first))
        resumed = Trainer(tiny_config(demo_corpus, tmp_path / "run", *args[:-3], "--train.max_steps=6"), resume=True)
        assert weights_in_one_buffer(_rnn(resumed))
        resumed.fit()
    _no_copy_warning(caught)
    rnn = _rnn(resumed)
    assert weights_in_one_buffer(rnn)
    for p in rnn.parameters():
        assert torch.equal(p, resumed.masters.master_of(p).to(p.dtype))


@pytest.mark.parametrize("request_", ["bf16", "fp16", "no"])
def test_twenty_steps_without_a_host_sync(demo_corpus, tmp_path, request_):
    """torch.cuda's sync debug mode raises on any synchronising call: 20 training steps make none."""
    trainer = Trainer(tiny_config(demo_corpus, tmp_path / "run", *GPU, *PRESET_LIKE,
                                  f"--train.mixed_precision={request_}", "--train.grad_accum=2"))
    trainer.train_step()  # optimizer state and cuDNN workspaces are created outside the checked window
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(20):
            trainer.train_step()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()


def test_pinned_host_fallback_gives_the_same_batches(demo_corpus, tmp_path):
    trainer = Trainer(tiny_config(demo_corpus, tmp_path / "run", *GPU))
    on_device = [trainer.batches.batch(c) for c in range(trainer.batches.chunks_per_epoch)]
    trainer.batches.table.to(torch.device("cuda"), max_device_fraction=0.0)
    assert "pinned" in trainer.batches.placement
    for c, ref in enumerate(on_device):
        b = trainer.batches.batch(c)
        for field in ("x", "y", "reset", "artist"):
            assert torch.equal(getattr(b, field), getattr(ref, field)), (c, field)


def test_auto_picks_a_16_bit_fused_rnn_on_a_modern_gpu():
    p = choose_precision("auto", torch.device("cuda"), RNNShape("lstm", 96, 256, 4, 0.2, 128))
    if torch.cuda.is_bf16_supported(including_emulation=False):
        assert p.low_precision and p.fused, p.describe()
