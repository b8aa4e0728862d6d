"""Shared fixtures: a prepared demo corpus, tiny configs, the shared data directory, subprocess helpers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
CONFIGS = REPO / "configs"

# Tests never touch the internet: wandb offline, no telemetry.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_DISABLE_GIT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a stray ~/.ray/auth_token must not turn on token auth
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def shared_file(*parts: str) -> Path:
    """A file under ../shared/data, or skip with the reason."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared is not beside the checkout)")
    return path


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, check: bool = True, timeout: int = 300):
    """Run `python -m lyricdist ARGS` in a subprocess; returns CompletedProcess (text)."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "lyricdist", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"lyricdist {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_main(*args: str, env: dict | None = None):
    """`lyricdist ARGS` in this process (where a subprocess adds nothing): (returncode, stdout, stderr) like
    subprocess.run's result. --help's exit is a returncode too."""
    import contextlib
    import io
    import types

    from lyricdist.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.ExitStack() as stack:
        patch = stack.enter_context(pytest.MonkeyPatch.context())
        for key, value in (env or {}).items():
            patch.setenv(key, value)
        stack.enter_context(contextlib.redirect_stdout(out))
        stack.enter_context(contextlib.redirect_stderr(err))
        try:
            code = main(list(args))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return types.SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory) -> Path:
    """The bundled demo corpus, prepared once per test session."""
    from lyricdist.prepare import prepare

    out = tmp_path_factory.mktemp("corpus") / "demo"
    prepare(["demo"], str(out), val_fraction=0.1, seed=1337, quiet=True)
    return out


def corpus_songs(corpus_dir: Path, split: str) -> list[tuple[str, str]]:
    """(artist, text) of every song of a prepared corpus's split, in order."""
    import numpy as np

    from lyricdist.data import Corpus

    corpus = Corpus(corpus_dir)
    tokens = np.asarray(corpus.tokens(split))
    starts, ids = corpus.doc_artist_ids(split)
    ends = np.append(starts[1:], len(tokens))
    return [(corpus.artists[a], corpus.vocab.decode(tokens[s:e])) for s, e, a in zip(starts, ends, ids)]


def tiny_config(corpus: Path, out_dir: Path, *overrides: str):
    """configs/tiny.yaml pointed at `corpus` and `out_dir`, plus overrides like '--train.max_steps=5'."""
    from lyricdist.train import load_config

    return load_config(
        CONFIGS / "tiny.yaml", [f"--data.corpus={corpus}", f"--train.out_dir={out_dir}", *overrides]
    )


def read_text_tree(root: Path) -> str:
    """Every file under root as text (binary files decoded leniently): for 'no secret anywhere' checks."""
    parts = []
    for path in Path(root).rglob("*"):
        if path.is_file():
            parts.append(path.read_bytes().decode("utf-8", errors="replace"))
    return "\n".join(parts)


def forced_precision(name: str):
    """A stand-in for lyricdist's choose_precision that picks `name` (bf16, fp16) whatever this CPU computes natively:
    the precision *plumbing* (masters, fp32 gradients, resume, sync) is tested on every CPU, with bf16 slow but
    correct where oneDNN has no bf16 kernel. Only assertions about speed or fusion may depend on the hardware. A
    fallback (failed dtypes given) is the real choice."""
    from lyricdist import precision as real
    from lyricdist.precision import DTYPES, Precision

    forced = Precision(DTYPES[name], "forced for the test", True, request=name)
    real_choose = real.choose_precision  # taken now, before a test patches it with this stand-in

    def choose(mixed_precision, device, shape, failed=()):
        return real_choose(mixed_precision, device, shape, failed) if failed else forced
    return choose


@pytest.fixture
def force_bf16(monkeypatch):
    """Trainers pick bf16 whatever the CPU (see forced_precision)."""
    import lyricdist.precision as precision

    monkeypatch.setattr(precision, "choose_precision", forced_precision("bf16"))
