"""The GPU path on a real GPU: cuDNN's fused RNN under every precision the trainer picks, masters, the pinned-host
fallback. Skipped (with the reason) on machines without CUDA, such as CI."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_config
from lyricdist.precision import OpCounter, choose_precision
from lyricdist.train import Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
GPU = ["--train.cpu=false", "--samples.enabled=false", "--tracking.backend=none", "--model.num_layers=2"]


@pytest.mark.parametrize("request_", ["auto", "no", "bf16", "fp16"])
def test_cudnn_rnn_is_fused_on_its_own_weights(demo_corpus, tmp_path, request_):
    counts = {}
    for seq_len in (10, 20):
        trainer = Trainer(tiny_config(demo_corpus, tmp_path / f"{seq_len}", *GPU, f"--train.seq_len={seq_len}",
                                      f"--train.mixed_precision={request_}"))
        assert trainer.acc.device.type == "cuda" and trainer.precision.fused, trainer.precision.describe()
        assert trainer.batches.table.tables["x"].device.type == "cuda" and trainer.batches.table.resident
        trainer.train_step()
        with OpCounter() as c:
            trainer.train_step()
        counts[seq_len] = c.total
        assert any("cudnn" in k for k in c.rnn_kernels()), c.rnn_kernels()
        rnn = trainer.acc.unwrap_model(trainer.model).rnn
        seen = {t.data_ptr() for _, ts in c.rnn_calls for t in ts}
        assert any(p.data_ptr() in seen for p in rnn.parameters()) or rnn._flat_weights[0].data_ptr() in seen
    assert counts[10] == counts[20], counts


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
    p = choose_precision("auto", torch.device("cuda"))
    if torch.cuda.is_bf16_supported():
        assert p.low_precision and p.fused, p.describe()
