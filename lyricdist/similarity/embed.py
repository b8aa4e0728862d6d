"""similarity embed: song vectors -> a 2-D PCA scatter coloured by artist (the original's Billboard plot)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..fileio import atomic_write_bytes, atomic_write_json
from .checkpoint import encode_texts, load_similarity_checkpoint
from .pairs import load_songs


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Projections on the first two principal components, and the share of variance each explains."""
    centred = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    var = s**2 / max((s**2).sum(), 1e-12)
    comps = vt[:2]
    if comps.shape[0] < 2:  # one-dimensional data: pad a zero axis so the plot still has two
        comps = np.vstack([comps, np.zeros_like(comps)])
        var = np.append(var, 0.0)
    return centred @ comps.T, var[:2]


def scatter_png(points: np.ndarray, artists: list[str], title: str, explained: np.ndarray) -> bytes:
    from ..options import require

    require("matplotlib", "viz", "similarity embed").use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 6), dpi=120)
    names = sorted(set(artists))
    cmap = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
    for k, name in enumerate(names):
        sel = np.array([a == name for a in artists])
        ax.scatter(points[sel, 0], points[sel, 1], s=18, alpha=0.8, color=cmap(k % cmap.N), label=name)
    ax.set_xlabel(f"PC1 ({explained[0]:.0%} of variance)")
    ax.set_ylabel(f"PC2 ({explained[1]:.0%} of variance)")
    ax.set_title(title)
    if len(names) <= 30:
        ax.legend(fontsize=7, markerscale=1.5, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def embed(checkpoint: str, sources: list[str] | None, out: str, wandb_cfg=None) -> dict:
    """Write OUT (PNG) and OUT with .json (artist, title, x, y per song); log both to wandb when configured."""
    model, vocab, config, _ = load_similarity_checkpoint(checkpoint)
    songs = load_songs(sources or config.get("sources") or ["demo"])
    vectors = encode_texts(model, vocab, [s.text for s in songs]).numpy()
    points, explained = pca_2d(vectors)
    artists = [s.artist for s in songs]
    png = scatter_png(points, artists, f"MaLSTM song vectors ({len(songs)} songs)", explained)
    out_path = Path(out)
    atomic_write_bytes(out_path, png)
    rows = [{"artist": s.artist, "title": s.title, "x": float(x), "y": float(y)} for s, (x, y) in zip(songs, points)]
    atomic_write_json(out_path.with_suffix(".json"), {"explained_variance": explained.tolist(), "songs": rows})
    if wandb_cfg is not None:
        _log_wandb(wandb_cfg, out_path, rows)
    return {"songs": len(songs), "png": str(out_path), "explained_variance": explained.tolist()}


def _log_wandb(cfg, png: Path, rows: list[dict]) -> None:
    from ..tracking import scrub, wandb_mode

    mode = wandb_mode(cfg)
    if mode is None:
        return
    import wandb

    t = cfg.tracking
    run = wandb.init(project=t.project, entity=t.entity, name=t.run_name, tags=list(t.tags) or None, mode=mode,
                     dir=str(png.parent), job_type="embed", config=scrub({"png": str(png)}))
    columns = ["artist", "title", "x", "y"]
    table = wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in rows])
    run.log({"song_embedding": wandb.Image(str(png)), "song_vectors_2d": table})
    run.finish()
