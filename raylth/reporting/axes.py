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


def save_axes(plt, fig, ax, path, title: str, *, xlabel: str | None = None, ylabel: str | None = None,
              legend_size: int = 8) -> None:
    """Label, grid and legend a one-axes figure, save it as a PNG and close it."""
    if xlabel is not None:
        ax.set_xlabel(xlabel)
    if ylabel is not None:
        ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
