"""The precision rule read against torch's sources, checked on a CPU: the kernel probe runs the model's own shape at
three lengths, a failing first step falls back instead of crashing, only native bf16 counts, 16-bit gradients are
summed and all-reduced in fp32, and every process starts from rank 0's masters. GPU-only properties (one cuDNN
weight buffer, no per-forward copies) are in tests/test_gpu.py."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import forced_precision, tiny_config
from lyricdist import precision
from lyricdist.precision import PROBE_SEQ_LENS, RNNShape, native_bf16, rnn_kernel
from lyricdist.train import Trainer

QUIET = ["--samples.enabled=false", "--tracking.backend=none"]
WORKER = Path(__file__).parent / "workers" / "precision_worker.py"


def test_the_probe_runs_the_models_own_recurrent_shape(demo_corpus, tmp_path, monkeypatch):
    """cuDNN picks its algorithm (persistent small-hidden or standard) from the shape: the probe must run the
    model's input size, hidden size, layers and dropout at the micro-batch one step runs, not a toy RNN."""
    seen = []
    real = precision.rnn_kernel

    def spy(*args):
        seen.append(args)
        return real(*args)

    monkeypatch.setattr(precision, "rnn_kernel", spy)
    trainer = Trainer(tiny_config(demo_corpus, tmp_path / "run", *QUIET, "--model.num_layers=3",
                                  "--model.hidden_size=24", "--model.dropout=0.25", "--model.embedding_dim=6",
                                  "--train.batch_size=8", "--train.grad_accum=2", "--train.mixed_precision=bf16"))
    rnn = trainer.model.rnn
    shapes = {args[0] for args in seen}
    assert shapes == {RNNShape("lstm", rnn.input_size, 24, 3, 0.25, 4)}, seen


def test_the_probe_compares_three_lengths_after_a_warm_up():
    """Fused = the op count does not grow with the sequence across 4, 8 and 16; an unfused RNN (oneDNN off) grows
    by several ops per timestep, and the probe says so on any CPU."""
    shape = RNNShape("lstm", 5, 7, 2, 0.0, 3)
    fused = rnn_kernel(shape, "fp32", "cpu")
    assert len(fused.counts) == len(PROBE_SEQ_LENS) == 3 and fused.fused, fused
    assert "mkldnn_rnn_layer" in fused.kernels
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")  # torch's, not ours
        with torch.backends.mkldnn.flags(enabled=False):
            unfused = rnn_kernel(RNNShape("lstm", 5, 7, 2, 0.0, 4), "fp32", "cpu")  # another shape: not cached
    assert not unfused.fused and unfused.counts[2] - unfused.counts[1] >= 8, unfused


def test_a_first_step_failure_falls_back_with_one_line(demo_corpus, tmp_path, monkeypatch, capsys):
    """A 16-bit kernel that passes the probe but fails on the real model (a cuDNN algorithm without bf16 dropout,
    say) falls back before step 1 with the precision line saying why, and the run trains."""
    monkeypatch.setattr(precision, "choose_precision", forced_precision("bf16"))
    real_forward = torch.nn.LSTM.forward

    def forward(self, *args, **kwargs):
        if self.weight_hh_l0.dtype == torch.bfloat16:
            raise RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED")
        return real_forward(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.LSTM, "forward", forward)
    trainer = Trainer(tiny_config(demo_corpus, tmp_path / "run", *QUIET, "--train.max_steps=3",
                                  "--train.eval_every=3", "--train.mixed_precision=bf16"))
    assert trainer.precision.rnn_dtype != torch.bfloat16
    assert trainer.model.rnn.weight_hh_l0.dtype == trainer.precision.rnn_dtype
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("precision:")]
    assert len(lines) == 2 and "bf16 failed in the first training step" in lines[1], lines
    assert "CUDNN_STATUS_NOT_SUPPORTED" in lines[1]
    metrics = trainer.fit()
    assert metrics["val_loss"] > 0 and trainer.step == 3


def test_only_native_bf16_counts_on_a_gpu(monkeypatch):
    """torch.cuda.is_bf16_supported() is true on V100/T4 by emulation: auto must not pick bf16 there."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert native_bf16(torch.device("cuda")) is False
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert native_bf16(torch.device("cuda")) is True


def test_micro_batches_are_summed_in_fp32(demo_corpus, tmp_path, force_bf16):
    """With grad_accum, each micro-batch's bf16 gradient is added into the fp32 master gradient as it comes: the
    master holds the fp32 sum, not a bf16 sum rounded at every micro-batch."""
    trainer = Trainer(tiny_config(demo_corpus, tmp_path / "run", *QUIET, "--train.batch_size=8",
                                  "--train.grad_accum=4", "--model.hidden_size=48"))
    rnn = trainer.model.rnn
    micro: dict[str, list[torch.Tensor]] = {n: [] for n, _ in rnn.named_parameters()}
    for name, p in rnn.named_parameters():
        p.register_hook(lambda g, name=name: micro[name].append(g.detach().clone()))
    grads = {}
    trainer.optimizer.optimizer.register_step_pre_hook(
        lambda opt, a, k: grads.update({n: trainer.masters.master_of(p).grad.clone()
                                        for n, p in rnn.named_parameters()}))
    trainer.train_step()
    worse = 0
    for name, parts in micro.items():
        assert len(parts) == 4 and parts[0].dtype == torch.bfloat16
        fp32_sum = sum(g.float() for g in parts)
        bf16_sum = parts[0]
        for g in parts[1:]:
            bf16_sum = bf16_sum + g
        assert torch.equal(grads[name], fp32_sum), name
        worse += int(not torch.equal(bf16_sum.float(), fp32_sum))
    assert worse, "a bf16 sum would have been exact: the test does not tell the two apart"


def test_masters_and_fp32_gradients_are_views_of_one_buffer(demo_corpus, tmp_path, force_bf16):
    """One broadcast syncs the masters and one all-reduce sums the gradients: each is a view of one flat buffer."""
    trainer = Trainer(tiny_config(demo_corpus, tmp_path / "run", *QUIET, "--model.num_layers=2"))
    m = trainer.masters
    for master, grad in zip(m.masters, m.grads):
        assert master.untyped_storage().data_ptr() == m.flat.untyped_storage().data_ptr()
        assert grad.untyped_storage().data_ptr() == m.flat_grad.untyped_storage().data_ptr()
    assert m.flat.numel() == sum(p.numel() for p in trainer.model.rnn.parameters())


def _torchrun(mode: str, corpus: Path, out: Path, *extra: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(WORKER), mode,
         str(corpus), str(out), *extra],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


@pytest.mark.slow
def test_two_process_bf16_gradients_are_reduced_in_fp32(demo_corpus, tmp_path):
    """2 processes x grad_accum 2, bf16 forced (gloo): the masters' gradient is the fp64 average of the four
    micro-batch gradients to fp32 rounding; the old path (a bf16 sum per process, DDP's bf16 all-reduce of the
    pre-divided buckets) is at bf16 rounding, orders of magnitude further."""
    _torchrun("grads", demo_corpus, tmp_path)
    ranks = [load_file(str(tmp_path / f"grads_{r}.safetensors")) for r in range(2)]
    names = sorted(k.split(".", 1)[1] for k in ranks[0] if k.startswith("master."))
    assert names, ranks[0].keys()
    new_err, old_err = [], []
    for name in names:
        micro = [[r[f"micro{m}.{name}"] for m in range(2)] for r in ranks]
        reference = sum(g.double() for parts in micro for g in parts) / 2
        master = ranks[0][f"master.{name}"]
        assert torch.equal(master, ranks[1][f"master.{name}"]), f"{name}: ranks disagree after the all-reduce"
        new_err.append(_rel(master, reference))
        per_rank = [(parts[0] + parts[1]) / 2 for parts in micro]  # bf16 accumulation, DDP's bf16 pre-division
        old_err.append(_rel(per_rank[0] + per_rank[1], reference))  # gloo's bf16 sum
    assert max(new_err) < 1e-6, new_err
    assert max(new_err) * 100 < max(old_err), (new_err, old_err)


@pytest.mark.slow
def test_every_process_starts_from_rank_0s_masters(demo_corpus, tmp_path):
    """Ranks seeded differently (as a user's per-rank seed or a non-deterministic init would): after set-up every
    process holds rank 0's fp32 masters and bf16 weights, and one step later they still agree."""
    _torchrun("sync", demo_corpus, tmp_path)
    ranks = [load_file(str(tmp_path / f"sync_{r}.safetensors")) for r in range(2)]
    assert ranks[0].keys() == ranks[1].keys() and any(k.startswith("master.") for k in ranks[0])
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), f"{key} differs between the processes"


def test_cpu_generation_steps_run_the_native_fp32_kernel():
    """Generation feeds one character per call: on a CPU oneDNN's fused kernel gains nothing there and reorders the
    weights every call, so `auto` is fp32 and single steps run PyTorch's native kernel; the prompt (several
    characters) still runs fused."""
    from lyricdist.model import CharRNN, ModelConfig
    from lyricdist.precision import OpCounter, use_for_inference
    from lyricdist.generate import generate

    model = CharRNN(ModelConfig(num_layers=2, hidden_size=16, artist_embedding_dim=4), 12, num_artists=2)
    assert use_for_inference(model, "cpu").rnn_dtype == torch.float32
    with OpCounter() as c:
        out = generate(model, [1, 2, 3], 6, [1.0], generator=torch.Generator().manual_seed(0))
    assert len(out[0]) == 6
    assert c.ops["mkldnn_rnn_layer"] == 2, c.ops  # the prompt's call, one per layer; no step went through oneDNN
    assert torch._C._get_mkldnn_enabled(), "oneDNN must be left on for everything else"
