"""Readers of a run directory while its trainer saves into it: the checkpoint loaders and `similarity
eval/score/embed` never modify the run directory and always see one complete save. Also: fileio leaves the
process umask alone."""

from __future__ import annotations

import builtins
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

from conftest import CONFIGS, REPO
from lyricdist import checkpoint as generator_checkpoint
from lyricdist.checkpoint import load_checkpoint, save_checkpoint
from lyricdist.errors import LyricdistError
from lyricdist.model import CharRNN, ModelConfig
from lyricdist.similarity.checkpoint import load_similarity_checkpoint, save_similarity_checkpoint
from lyricdist.similarity.config import SimilarityModelConfig
from lyricdist.similarity.model import MaLSTM
from lyricdist.similarity.tokenize import WordVocab
from lyricdist.vocab import Vocab


def _filled(model, value: int):
    """Every weight equals `value` (the save's step), so a load can tell whether its files come from one save."""
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float(value))
    return model


def _generator(run: Path):
    model = CharRNN(ModelConfig(num_layers=2, hidden_size=128), 40)
    vocab = Vocab([chr(65 + i) for i in range(40)])

    def save(step: int) -> None:
        save_checkpoint(run / "checkpoints" / "last", _filled(model, step), vocab, step=step)

    def load() -> tuple[int, list[torch.Tensor]]:
        loaded, _, config = load_checkpoint(run)
        return config["step"], list(loaded.parameters())

    return save, load


def _similarity(run: Path):
    vocab = WordVocab(["alpha", "beta", "gamma"])
    model = MaLSTM(SimilarityModelConfig(embedding_dim=32, hidden_size=64, max_len=10), len(vocab))

    def save(step: int) -> None:
        save_similarity_checkpoint(run / "checkpoints" / "last", _filled(model, step), vocab, ["A"],
                                   torch.full((50, 64), float(step)), torch.zeros(50, dtype=torch.long), step=step)

    def load() -> tuple[int, list[torch.Tensor]]:
        loaded, _, config, songs = load_similarity_checkpoint(run)
        return config["step"], [*loaded.parameters(), songs["vectors"]]

    return save, load


@pytest.mark.parametrize("kind", [_generator, _similarity], ids=["generator", "similarity"])
def test_loads_while_a_writer_keeps_swapping_see_one_complete_save(tmp_path, kind):
    save, load = kind(tmp_path)
    save(1)
    stop, saver_errors = threading.Event(), []

    def keep_saving() -> None:
        step = 1
        while not stop.is_set():
            step += 1
            try:
                save(step)
            except BaseException as e:  # reported by the main thread
                saver_errors.append(e)
                return

    saver = threading.Thread(target=keep_saving, daemon=True)
    saver.start()
    steps, deadline = [], time.monotonic() + 20
    try:
        while (len(steps) < 300 or len(set(steps)) < 5) and time.monotonic() < deadline:  # 5 saves, however slow
            step, tensors = load()
            values = {float(v) for t in tensors for v in (t.detach().flatten()[0], t.detach().flatten()[-1])}
            assert values == {float(step)}, f"load {len(steps)}: weights and config.json come from different saves"
            steps.append(step)
    finally:
        stop.set()
        saver.join(60)
    assert not saver_errors, saver_errors
    assert len(set(steps)) >= 5, "the loads did not overlap the saves"


def test_a_checkpoint_swapped_right_after_it_was_resolved_is_not_called_incomplete(tmp_path, monkeypatch):
    """The writer's first rename (`last` -> `.last.old-*`) lands just after the reader resolved `last`; the new
    version arrives 50 ms later. The field report: `checkpoints/best is missing config.json; it is incomplete`."""
    _generator(tmp_path / "run")[0](1)
    _generator(tmp_path / "next")[0](2)
    last = tmp_path / "run" / "checkpoints" / "last"
    finish = threading.Timer(0.05, os.rename, (tmp_path / "next" / "checkpoints" / "last", last))
    real_readable_dir, started = generator_checkpoint.readable_dir, []

    def swap_begins_after(final):
        found = real_readable_dir(final)
        if found == last and not started:
            os.rename(last, last.with_name(".last.old-0001"))
            finish.start()
            started.append(True)
        return found

    monkeypatch.setattr(generator_checkpoint, "readable_dir", swap_begins_after)
    try:
        model, _, config = load_checkpoint(tmp_path / "run")
    finally:
        if started:
            finish.join()
    assert started and config["step"] in (1, 2)
    assert {float(p.detach().flatten()[0]) for p in model.parameters()} == {float(config["step"])}


def test_a_stably_incomplete_checkpoint_is_reported_at_once(tmp_path, monkeypatch):
    """A directory that nobody is swapping is read once: no retry loop (counted, not timed)."""
    from lyricdist import fileio

    save, _ = _generator(tmp_path)
    save(1)
    (tmp_path / "checkpoints" / "last" / "vocab.json").unlink()
    waits: list[float] = []
    monkeypatch.setattr(fileio.time, "sleep", waits.append)
    with pytest.raises(LyricdistError, match="missing vocab.json; it is incomplete"):
        load_checkpoint(tmp_path)
    assert [w for w in waits if w > 0] == [], f"the reader retried {len(waits)} times"


def _record_changes_under(root: Path, monkeypatch) -> list[str]:
    """Every call this process makes that would create, change or remove something under `root`."""
    changes: list[str] = []

    def inside(p) -> bool:
        return isinstance(p, (str, bytes, os.PathLike)) and Path(os.path.abspath(os.fsdecode(p))).is_relative_to(root)

    def watch(module, name, paths: int = 1, writes=lambda args, kwargs: True) -> None:
        real = getattr(module, name)

        def wrapper(*args, **kwargs):
            if any(inside(a) for a in args[:paths]) and writes(args, kwargs):
                changes.append(f"{name}{tuple(str(a) for a in args[:paths])}")
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    for name in ("unlink", "remove", "rmdir", "mkdir", "chmod"):
        watch(os, name)
    watch(os, "rename", paths=2)
    watch(os, "replace", paths=2)
    watch(shutil, "rmtree")
    def second(args, kwargs, name, default=None):
        return args[1] if len(args) > 1 else kwargs.get(name, default)

    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    watch(os, "open", writes=lambda args, kwargs: bool(second(args, kwargs, "flags") & write_flags))
    for module in (builtins, io):
        watch(module, "open", writes=lambda args, kwargs: any(c in second(args, kwargs, "mode", "r") for c in "wax+"))
    return changes


@pytest.mark.slow
def test_similarity_readers_never_modify_a_run_that_is_saving(tmp_path, monkeypatch):
    """eval/score/embed and the loader, in a loop while `similarity train` saves every epoch: the trainer finishes,
    no reader touches its run directory, and the only error a reader sees is that no checkpoint exists yet."""
    from lyricdist.similarity.embed import embed
    from lyricdist.similarity.score import score
    from lyricdist.similarity.train import evaluate

    run, scratch = tmp_path / "run", tmp_path / "scratch"
    scratch.mkdir()
    text = scratch / "ballad.txt"
    text.write_text("the river keeps my name and the night is long\n")
    stderr = open(scratch / "train.stderr", "w")
    trainer = subprocess.Popen(
        [sys.executable, "-m", "lyricdist", "similarity", "train", "--config", str(CONFIGS / "similarity-tiny.yaml"),
         f"--train.out_dir={run}", "--train.epochs=12", "--train.eval_every_epochs=1"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr,
    )
    steps = set()
    readers = [
        lambda: steps.add(load_similarity_checkpoint(run)[2]["step"]),
        lambda: evaluate(str(run), None, str(scratch / "metrics.jsonl")),
        lambda: score(str(run), str(text)),
        lambda: embed(str(run), None, str(scratch / "songs.png")),
    ]
    changes = _record_changes_under(run, monkeypatch)
    errors, done, deadline = [], 0, time.monotonic() + 240
    try:
        while done < 5000 and trainer.poll() is None and time.monotonic() < deadline:
            try:
                readers[0 if done % 50 else done // 50 % 4]()
                done += 1
            except LyricdistError as e:
                if "not found" not in str(e):
                    errors.append(str(e))
                time.sleep(0.05)  # no checkpoint yet
            except Exception as e:
                errors.append(f"{type(e).__name__}: {e}")
        returncode = trainer.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if trainer.poll() is None:
            trainer.kill()
        stderr.close()
    monkeypatch.undo()
    assert returncode == 0, (scratch / "train.stderr").read_text()[-3000:]
    assert changes == [], changes[:10]
    assert errors == [], errors[:10]
    assert len(steps) >= 3, f"the readers hardly overlapped the saves ({done} reads, steps {sorted(steps)})"


def test_fileio_reads_the_umask_once_and_never_sets_it(tmp_path):
    """A umask changed for a moment would give files other threads create at that moment loose permissions."""
    script = textwrap.dedent(
        """
        import json, os, sys
        os.umask(0o027)
        real, calls = os.umask, []
        os.umask = lambda mask: calls.append(mask) or real(mask)
        from lyricdist import fileio
        at_import = list(calls)
        root = sys.argv[1]
        for i in range(3):
            fileio.atomic_write_text(os.path.join(root, f"f{i}.txt"), "x")
            with fileio.atomic_dir(os.path.join(root, f"d{i}")) as tmp:
                fileio.atomic_write_text(os.path.join(tmp, "inner.txt"), "y")
        mode = lambda p: oct(os.stat(os.path.join(root, p)).st_mode & 0o777)
        print(json.dumps({"at_import": at_import, "later": calls[len(at_import):],
                          "modes": [mode("f0.txt"), mode("d0/inner.txt"), mode("d2")]}))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["later"] == [], "os.umask called after the first read"
    status = Path("/proc/self/status")
    if status.exists() and "Umask:" in status.read_text():
        assert out["at_import"] == [], "os.umask called although /proc/self/status gives the umask"
    assert out["modes"] == ["0o640", "0o640", "0o750"]
