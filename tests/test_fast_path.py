"""The GPU-fast path, proved by properties a CPU can check: a fused RNN kernel under every precision the trainer
can pick, on the module's own weights; batches built once (no numpy per step); no host syncs between log steps."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import forced_precision, tiny_config
from lyricdist.precision import OpCounter, RNNShape, choose_precision, rnn_kernel
from lyricdist.train import Trainer, train

QUIET = ["--samples.enabled=false", "--tracking.backend=none", "--model.num_layers=2", "--model.dropout=0.1"]
CPU = torch.device("cpu")
SHAPE = RNNShape("lstm", 40, 32, 2, 0.1, 8)  # about the tiny config's recurrent layers


def _trainer(corpus, out, *extra):
    return Trainer(tiny_config(corpus, out, *QUIET, *extra))


def _pickable_requests():
    """Every precision request, with what the trainer picks for it on this machine (ids show both)."""
    return [pytest.param(req, id=f"{req}->{choose_precision(req, CPU, SHAPE).name}")
            for req in ("auto", "no", "bf16", "fp16")]


@pytest.mark.parametrize("request_", _pickable_requests())
def test_train_step_op_count_does_not_grow_with_seq_len(demo_corpus, tmp_path, request_):
    """One fused kernel per layer: doubling seq_len leaves the dispatched op count of a whole train step unchanged
    (the bf16 path before this change ran 3,971 ops at seq_len 20 and 7,811 at 40)."""
    counts, kernels = {}, set()
    for seq_len in (10, 20):
        trainer = _trainer(demo_corpus, tmp_path / f"s{seq_len}", f"--train.seq_len={seq_len}",
                           f"--train.mixed_precision={request_}")
        assert trainer.precision.fused, trainer.precision.describe()
        trainer.train_step()  # the first step creates the optimizer state
        with OpCounter() as c:
            trainer.train_step()
        counts[seq_len] = c.total
        kernels.update(c.rnn_kernels())
        if request_ != "no" and trainer.precision.low_precision:
            assert trainer.model.rnn.weight_hh_l0.dtype == trainer.precision.rnn_dtype
    assert counts[10] == counts[20], f"op count grows with seq_len: {counts}"
    assert any("rnn" in k for k in kernels), kernels


@pytest.mark.parametrize("request_", _pickable_requests())
def test_rnn_kernel_runs_on_the_modules_own_weights(demo_corpus, tmp_path, request_):
    """The fused kernel receives the RNN's parameters themselves: no per-forward copies or casts of the weights."""
    trainer = _trainer(demo_corpus, tmp_path / "run", f"--train.mixed_precision={request_}")
    with OpCounter() as c:
        trainer.train_step()
    seen = {(t.data_ptr(), t.dtype) for _, tensors in c.rnn_calls for t in tensors}
    rnn = trainer.acc.unwrap_model(trainer.model).rnn
    for name, p in rnn.named_parameters():
        assert (p.data_ptr(), p.dtype) in seen, f"the kernel did not use rnn.{name} itself"


def test_an_unfused_request_falls_back_with_one_line(demo_corpus, tmp_path, capsys):
    """fp16 RNNs have no fused oneDNN kernel on a CPU: asking for fp16 there falls back to fp32, saying so once."""
    check = rnn_kernel(SHAPE, "fp16", "cpu")
    if check.fused:
        pytest.skip(f"this CPU stack fuses fp16 RNNs ({check.kernels}): nothing to fall back from")
    trainer = _trainer(demo_corpus, tmp_path / "run", "--train.mixed_precision=fp16")
    assert trainer.precision.rnn_dtype == torch.float32 and trainer.precision.fused
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("precision:")]
    assert len(lines) == 1 and "fell back" in lines[0] and "fp16 RNN is not fused" in lines[0], lines


def test_no_numpy_batch_building_after_set_up(demo_corpus, tmp_path, monkeypatch):
    """Each step is a slice of tables built at set-up: numpy in the data module raises once training starts."""
    import lyricdist.data as data

    trainer = _trainer(demo_corpus, tmp_path / "run", "--train.batch_size=32")
    table = trainer.batches.table.tables["x"]

    class NoNumpy:
        def __getattr__(self, name):
            raise AssertionError(f"numpy.{name} used after set-up")

    monkeypatch.setattr(data, "np", NoNumpy())
    monkeypatch.setattr(data.SongLayout, "chunks", lambda *a, **k: (_ for _ in ()).throw(AssertionError("rebuilt")))
    for _ in range(trainer.batches.chunks_per_epoch + 2):  # past an epoch boundary
        b = trainer.batches.batch(trainer.step % trainer.batches.chunks_per_epoch)
        lo, hi = table.data_ptr(), table.data_ptr() + table.numel() * table.element_size()
        assert lo <= b.x.data_ptr() < hi, "the batch is a copy, not a view of the table"
        trainer.train_step()
    trainer.evaluate()


SYNCS = ("item", "tolist", "numpy", "__float__", "__int__", "__bool__")


def test_host_syncs_only_at_log_steps(demo_corpus, tmp_path, monkeypatch):
    """Over 2 x log_every steps, reading a tensor's value on the host (.item(), float(), .tolist(), ...) happens only
    at log steps. (torch.optim's own step counters are CPU tensors even on a GPU: their .item() is not a sync.)"""
    log_every = 5
    trainer = _trainer(demo_corpus, tmp_path / "run", f"--train.log_every={log_every}",
                       f"--train.max_steps={2 * log_every}", f"--train.eval_every={2 * log_every}",
                       "--train.grad_accum=2")
    seen: list[tuple[int, str, str]] = []

    def spy(name, original):
        def wrapper(self, *a, **k):
            caller = sys._getframe(1).f_code.co_filename
            if f"torch{Path('/').as_posix()}optim" not in caller.replace("\\", "/"):
                seen.append((trainer.step, name, caller))
            return original(self, *a, **k)
        return wrapper

    for name in SYNCS:
        monkeypatch.setattr(torch.Tensor, name, spy(name, getattr(torch.Tensor, name)))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: seen.append((trainer.step, "synchronize", "")))
    trainer.fit()
    assert trainer.step == 2 * log_every
    off_log = [s for s in seen if s[0] % log_every]
    assert not off_log, f"host syncs between log steps: {off_log[:5]}"
    assert {s[0] for s in seen} >= {log_every}, "the spy saw no sync at all: it is not measuring anything"


def test_bf16_trains_fp32_masters_and_saves_them(demo_corpus, tmp_path, force_bf16):
    """Under bf16 the RNN computes on its own bf16 weights; the optimizer updates fp32 masters, which are what
    the checkpoint holds, and the bf16 weights are always the masters rounded."""
    trainer = _trainer(demo_corpus, tmp_path / "run", "--train.mixed_precision=bf16", "--train.max_steps=6",
                       "--train.eval_every=6")
    assert trainer.precision.rnn_dtype == torch.bfloat16
    rnn = trainer.acc.unwrap_model(trainer.model).rnn
    before = [m.detach().clone() for m in trainer.masters.masters]
    trainer.fit()
    for (name, p), m, m0 in zip(rnn.named_parameters(), trainer.masters.masters, before):
        assert p.dtype == torch.bfloat16 and m.dtype == torch.float32
        assert not torch.equal(m, m0), f"master of rnn.{name} was never updated"
        assert torch.equal(p, m.to(torch.bfloat16)), f"rnn.{name} is not its master rounded"
        assert not torch.equal(m, m.to(torch.bfloat16).float()), f"master of rnn.{name} is only bf16-precise"
    saved = load_file(str(tmp_path / "run" / "checkpoints" / "last" / "model.safetensors"))
    for name, m in zip([n for n, _ in rnn.named_parameters()], trainer.masters.masters):
        assert saved[f"rnn.{name}"].dtype == torch.float32 and torch.equal(saved[f"rnn.{name}"], m.cpu())


def test_bf16_resume_is_bitwise_on_cpu(demo_corpus, tmp_path, force_bf16):
    """Stop at step 4, resume to 8 under bf16: the same fp32 weights as 8 steps straight."""
    args = ["--train.mixed_precision=bf16", "--train.save_every=4", "--train.eval_every=4", "--train.log_every=2"]
    train(tiny_config(demo_corpus, tmp_path / "straight", *QUIET, *args, "--train.max_steps=8"))
    train(tiny_config(demo_corpus, tmp_path / "split", *QUIET, *args, "--train.max_steps=4"))
    train(tiny_config(demo_corpus, tmp_path / "split", *QUIET, *args, "--train.max_steps=8"), resume=True)
    a = load_file(str(tmp_path / "straight" / "checkpoints" / "last" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "checkpoints" / "last" / "model.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after a bf16 resume"


def test_fp16_path_scales_the_loss_and_updates_fp32_masters(demo_corpus, tmp_path, monkeypatch):
    """The fp16 plumbing (GradScaler on fp32 masters) on a CPU. A CPU has no fused fp16 RNN, so the start-up check
    would never pick fp16 here: the choice is forced; tests/test_gpu.py runs the real thing on a GPU."""
    import lyricdist.precision as precision_module

    monkeypatch.setattr(precision_module, "choose_precision", forced_precision("fp16"))
    args = ["--train.max_steps=30", "--train.eval_every=30", "--train.log_every=10", "--train.lr=0.02"]
    trainer = _trainer(demo_corpus, tmp_path / "fp16", *args)
    assert trainer.scaler.is_enabled() and trainer.model.rnn.weight_hh_l0.dtype == torch.float16
    trainer.fit()
    assert trainer.scaler.get_scale() > 1  # loss scaling on, and not collapsed by overflows
    assert all(m.dtype == torch.float32 and torch.isfinite(m).all() for m in trainer.masters.masters)
    ref = train(tiny_config(demo_corpus, tmp_path / "fp32", *QUIET, *args))
    rows = [__import__("json").loads(l) for l in (tmp_path / "fp16" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert rows[-1]["val_loss"] == pytest.approx(ref["val_loss"], abs=0.05)  # fp16 training tracks fp32


def test_resume_from_a_state_without_fp32_rnn_weights_keeps_the_trained_weights(demo_corpus, tmp_path, force_bf16):
    """States written before rnn_fp32.safetensors existed: the masters come from the saved model, never from a
    fresh initialisation that the first step would then write over the trained weights."""
    from lyricdist.state import FULL_PRECISION_FILE as RNN_FP32_FILE

    args = ["--train.mixed_precision=bf16", "--train.save_every=4", "--train.eval_every=4"]
    train(tiny_config(demo_corpus, tmp_path / "run", *QUIET, *args, "--train.max_steps=4"))
    (tmp_path / "run" / "state" / RNN_FP32_FILE).unlink()
    saved = load_file(str(tmp_path / "run" / "state" / "model.safetensors"))
    trainer = Trainer(tiny_config(demo_corpus, tmp_path / "run", *QUIET, *args, "--train.max_steps=8"), resume=True)
    rnn = trainer.acc.unwrap_model(trainer.model).rnn
    for (name, p), m in zip(rnn.named_parameters(), trainer.masters.masters):
        assert torch.equal(m, saved[f"rnn.{name}"].float()), f"master of rnn.{name} is not the saved weight"
        assert torch.equal(p, saved[f"rnn.{name}"].to(p.dtype))


@pytest.mark.parametrize("request_", ["no", "bf16"])
def test_sampling_follows_the_training_precision_rule(demo_corpus, tmp_path, request_):
    """`sample` and `collab` load a checkpoint and run its RNN in the dtype the training rule picks, fused."""
    from lyricdist.checkpoint import load_checkpoint
    from lyricdist.precision import use_for_inference
    from lyricdist.generate import generate

    train(tiny_config(demo_corpus, tmp_path / "run", *QUIET, "--train.max_steps=2", "--train.eval_every=2"))
    model, _, _ = load_checkpoint(tmp_path / "run")
    precision = use_for_inference(model, "cpu", request_)
    expected = choose_precision(request_, CPU, RNNShape.of(model.rnn, 8)).rnn_dtype
    assert model.rnn.weight_hh_l0.dtype == precision.rnn_dtype == expected
    with OpCounter() as c:
        out = generate(model, [1, 2, 3], 5, [1.0], generator=torch.Generator().manual_seed(0))
    assert len(out[0]) == 5 and any("rnn" in k for k in c.rnn_kernels()), c.rnn_kernels()
