"""demo: the embedded default job, end to end on one machine.

scrape (only when GENIUS_ACCESS_TOKEN is set: a few artists on a local Ray instance) or the bundled demo corpus
-> prepare -> train (one process, wandb offline) -> print samples. Everything lands under --out.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from jsonargparse.typing import PositiveInt

DEFAULT_ARTISTS = ["Bob Dylan", "Taylor Swift"]


def preset_path(name: str = "demo") -> Path:
    return Path(str(resources.files("lyricdist") / "presets" / f"{name}.yaml"))


def run_demo(
    out: str = "runs/demo",
    max_steps: PositiveInt | None = None,
    artist: list[str] | None = None,
    max_songs: PositiveInt = 20,
    overrides: list[str] | None = None,
) -> Path:
    """The embedded default: prepare the demo corpus (or scrape when GENIUS_ACCESS_TOKEN is set), train, sample.

    Args:
        out: where the corpus, run and checkpoints go
        max_steps: override the preset's training steps
        artist: artists to scrape when a token is set
        max_songs: songs per artist when scraping
        overrides: run-config overrides for the preset, e.g. [--train.lr=1e-3]
    """
    from .options import check_types
    from .prepare import prepare
    from .sample import sample

    check_types(run_demo, locals())
    from .train import load_config, train

    out_dir = Path(out)
    corpus = out_dir / "corpus"
    if os.environ.get("GENIUS_ACCESS_TOKEN"):
        from .genius.driver import scrape

        dataset = out_dir / "genius"
        print(f"GENIUS_ACCESS_TOKEN is set: scraping {', '.join(artist or DEFAULT_ARTISTS)} with Ray")
        scrape(artist or DEFAULT_ARTISTS, out=str(dataset), max_songs=max_songs)
        source = str(dataset)
    else:
        print("no GENIUS_ACCESS_TOKEN: using the bundled demo corpus (two invented artists)")
        source = "demo"
    prepare([source], str(corpus), overwrite=True)
    # the wandb run is named after the demo's directory (its out_dir, OUT/train, would name every demo "train")
    args = [f"--data.corpus={corpus}", f"--train.out_dir={out_dir / 'train'}",
            f"--tracking.run_name={out_dir.resolve().name}", *(overrides or [])]
    if max_steps is not None:
        args += [f"--train.max_steps={max_steps}", f"--train.eval_every={max(1, min(250, max_steps))}"]
    cfg = load_config(preset_path("demo"), args)
    resume = (out_dir / "train" / "state").exists()
    train(cfg, resume=resume)
    ckpt = out_dir / "train" / "checkpoints" / "best"
    for r in sample(str(ckpt), primetext=cfg.samples.primetexts[0], length=300, temperature=[0.5, 1.0], seed=0):
        print(f"\n--- sample (temperature {r.temperature}) ---\n{r.text}")
    print(f"\ncheckpoint: {ckpt}\nmore: lyricdist sample {ckpt} --primetext 'turn it up' --temperature 0.2 0.5 1.0 1.2")
    return ckpt
