"""The paper's evaluation: 2-class accuracy (threshold 0.5), 10-class accuracy over score deciles, and the
Pearson and Spearman correlations of predicted and target similarity."""

from __future__ import annotations

import numpy as np


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties sharing their average rank (what Spearman's rho needs)."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.bincount(inverse, weights=ranks) / counts)[inverse]


def _corr(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return None  # undefined for a constant series
    return float(np.corrcoef(a, b)[0, 1])


def decile(x: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(x * 10), 0, 9).astype(int)


def pair_metrics(pred, target) -> dict:
    pred, target = np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64)
    return {
        "pairs": int(len(pred)),
        "mse": float(np.mean((pred - target) ** 2)) if len(pred) else None,
        "accuracy": float(np.mean((pred >= 0.5) == (target >= 0.5))) if len(pred) else None,
        "decile_accuracy": float(np.mean(decile(pred) == decile(target))) if len(pred) else None,
        "pearson": _corr(pred, target),
        "spearman": _corr(_ranks(pred), _ranks(target)),
    }


def format_table(metrics: dict) -> str:
    rows = [
        ("pairs", metrics["pairs"], "{}"),
        ("2-class accuracy", metrics["accuracy"], "{:.1%}"),
        ("10-class (decile) accuracy", metrics["decile_accuracy"], "{:.1%}"),
        ("Pearson r", metrics["pearson"], "{:.3f}"),
        ("Spearman rho", metrics["spearman"], "{:.3f}"),
        ("MSE", metrics["mse"], "{:.4f}"),
    ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {'n/a' if v is None else fmt.format(v)}" for name, v, fmt in rows)
