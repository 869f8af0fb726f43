"""Shared plot helpers."""

from __future__ import annotations


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def weights_remaining_axis(ax, max_sparsity: float) -> None:
    """Log x axis of the share of weights remaining, sparser to the right."""
    ax.set_xscale("log")
    ticks = [t for t in (100, 50, 20, 10, 5, 2, 1, 0.5, 0.2, 0.1) if t >= 100 * (1 - max_sparsity) * 0.8]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.invert_xaxis()
    ax.set_xlabel("weights remaining (%)")
