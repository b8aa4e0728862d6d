"""The similarity trainer shares the generator's run plumbing: exact resume on CPU (between epochs and from a stop
signal mid-epoch), a run in progress is never started over, and both model kinds keep best/last checkpoints."""

from __future__ import annotations

import os
import signal

import pytest
from safetensors.torch import load_file

from conftest import CONFIGS
from lyricdist.errors import LyricdistError
from lyricdist.run import TrainingStopped
from lyricdist.similarity import load_config
from lyricdist.similarity.train import train

KINDS = {
    "malstm": ("similarity-tiny.yaml", ["--train.epochs=3", "--train.eval_every_epochs=1", "--data.pairs_per_song=2",
                                        "--data.val_fraction=0.2"]),
    "ngram": ("similarity-ngram.yaml", ["--train.epochs=3", "--model.buckets=4096", "--model.embedding_dim=8",
                                        "--data.pairs_per_song=4"]),
}


def _config(kind: str, out, *extra: str):
    name, args = KINDS[kind]
    return load_config(CONFIGS / name, [*args, f"--train.out_dir={out}", "--train.log_every=2", *extra])


def _weights(out, name="last"):
    return load_file(str(out / "checkpoints" / name / "model.safetensors"))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_stop_mid_epoch_then_resume_is_bitwise_the_uninterrupted_run(kind, tmp_path, monkeypatch):
    """SIGTERM in the middle of epoch 2 saves the state at that step; --resume ends where a straight run ends."""
    straight = train(_config(kind, tmp_path / "straight"))

    if kind == "ngram":
        from lyricdist.similarity.train_ngram import NgramArm as Arm
    else:
        from lyricdist.similarity.train import MaLSTMArm as Arm
    original = Arm.step_on
    calls = []

    def signalled_step(self, batch):
        calls.append(1)
        if len(calls) == self.steps_per_epoch() + 2:  # two steps into epoch 2
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, batch)

    monkeypatch.setattr(Arm, "step_on", signalled_step)
    out = tmp_path / "stopped"
    with pytest.raises(TrainingStopped):
        train(_config(kind, out))
    monkeypatch.setattr(Arm, "step_on", original)
    with pytest.raises(LyricdistError, match="--resume"):
        train(_config(kind, out))  # a run in progress is never started over
    resumed = train(_config(kind, out), resume=True)
    a, b = _weights(tmp_path / "straight"), _weights(out)
    assert a.keys() == b.keys()
    for key in a:
        assert (a[key] == b[key]).all(), f"{key} differs after a stop mid-epoch and --resume"
    assert resumed == straight


def test_resume_between_epochs_and_the_best_checkpoint(tmp_path):
    """Train 2 epochs, then continue to 3 with --resume: the same weights and best checkpoint as 3 straight."""
    train(_config("ngram", tmp_path / "straight"))
    train(_config("ngram", tmp_path / "split", "--train.epochs=2"))
    train(_config("ngram", tmp_path / "split"), resume=True)
    for name in ("last", "best"):
        a, b = _weights(tmp_path / "straight", name), _weights(tmp_path / "split", name)
        assert all((a[k] == b[k]).all() for k in a), name


def test_a_changed_model_cannot_resume(tmp_path):
    out = tmp_path / "run"
    train(_config("ngram", out, "--train.epochs=1"))
    with pytest.raises(LyricdistError, match="cannot resume: model.embedding_dim"):
        train(_config("ngram", out, "--model.embedding_dim=16"), resume=True)
