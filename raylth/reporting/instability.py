"""Instability plots and tables: error along the interpolation path, instability
against sparsity and against the spawn step k, sharpness, landscapes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from raylth.reporting.axes import pyplot, weights_remaining_axis
from raylth.store import Store


def _pairs_by_level(store: Store, rows) -> dict[tuple, list[dict]]:
    """(method, rewind, level, sparsity) -> the interpolation curves of every pair, all seeds."""
    curves: dict[tuple, list[dict]] = {}
    for row in rows.itertuples():
        artifact = store.get(row.id)
        if artifact is None:
            continue
        key = (row.method, row.rewind, int(row.level), float(row.sparsity))
        curves.setdefault(key, []).extend(artifact.metrics["pairs"])
    return curves


def plot_error_vs_alpha(store: Store, rows, path: Path, title: str) -> None:
    curves = _pairs_by_level(store, rows)
    panels = sorted({(k[2], k[3]) for k in curves})
    plt = pyplot()
    cols = min(4, len(panels))
    nrows = -(-len(panels) // cols)
    # at least 6 inches wide: one panel must still fit the title
    fig, axes = plt.subplots(nrows, cols, figsize=(max(6.0, 3.6 * cols), 2.9 * nrows + 0.4), squeeze=False,
                             sharey=True)
    for ax, (level, sparsity) in zip(axes.flat, panels):
        for (method, rewind, lvl, _), pairs in sorted(curves.items()):
            if lvl != level:
                continue
            alpha = np.array(pairs[0]["alpha"])
            color = None
            for split, style in (("test_err", "-"), ("train_err", ":")):
                errs = 100 * np.array([p[split] for p in pairs])
                label = f"{method} k={rewind}" if split == "test_err" else None
                line, = ax.plot(alpha, errs.mean(0), style, color=color, label=label)
                color = line.get_color()
                ax.fill_between(alpha, errs.mean(0) - errs.std(0), errs.mean(0) + errs.std(0),
                                color=color, alpha=0.15)
        ax.set_title(f"level {level}: {100 * sparsity:.1f}% sparse", fontsize=9)
        ax.set_xlabel("alpha")
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("error (%)  test -, train :")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _instability_axes(threshold: float):
    """A figure for test instability, with the stable region shaded."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.axhspan(0, 100 * threshold, color="green", alpha=0.12, label=f"stable (< {100 * threshold:g} pts)")
    return plt, fig, ax


def _mean_and_spread(ax, x, stats, label: str) -> None:
    """A line of the mean instability (points) with its spread shaded."""
    mean, std = 100 * stats["mean"], 100 * stats["std"]
    line, = ax.plot(x, mean, marker="o", markersize=3, label=label)
    ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2)


def _finish(plt, fig, ax, path: Path, title: str, legend_size: int) -> None:
    ax.set_ylabel("test instability (error points)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_instability_vs_sparsity(rows, path: Path, title: str, threshold: float) -> None:
    plt, fig, ax = _instability_axes(threshold)
    for (method, rewind), group in rows.groupby(["method", "rewind"]):
        stats = group.groupby("level").agg(sparsity=("sparsity", "mean"),
                                           mean=("instability_test", "mean"),
                                           std=("instability_test", "std")).fillna(0.0)
        _mean_and_spread(ax, 100 * (1 - stats["sparsity"]), stats, f"{method} k={rewind}")
    weights_remaining_axis(ax, rows["sparsity"].max())
    _finish(plt, fig, ax, path, title, legend_size=8)


def plot_instability_vs_rewind(rows, path: Path, title: str, threshold: float) -> None:
    plt, fig, ax = _instability_axes(threshold)
    for (method, level), group in rows.groupby(["method", "level"]):
        stats = group.groupby("spawn_iterations").agg(mean=("instability_test", "mean"),
                                                      std=("instability_test", "std")).fillna(0.0)
        steps = np.maximum(stats.index.to_numpy(), 0.5)  # k = 0 on a log axis
        _mean_and_spread(ax, steps, stats, f"{method} level {level} ({100 * group.sparsity.mean():.0f}% sparse)")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel("spawn step k (iterations)")
    _finish(plt, fig, ax, path, title, legend_size=7)


def instability_table(rows) -> str:
    lines = ["| sweep | method | k | level | sparsity | instability test | instability train | loss barrier | stable | seeds |",
             "|---|---|---|---:|---:|---:|---:|---:|---|---:|"]
    grouped = rows.groupby(["sweep", "method", "rewind", "level"], dropna=False)
    for (sweep, method, rewind, level), g in grouped:
        lines.append(
            f"| {sweep or '-'} | {method} | {rewind} | {level} | {100 * g.sparsity.mean():.1f}% | "
            f"{100 * g.instability_test.mean():.2f} ± {100 * g.instability_test.std(ddof=1) if len(g) > 1 else 0:.2f} | "
            f"{100 * g.instability_train.mean():.2f} | {g.loss_barrier.mean():.4f} | "
            f"{int(g.stable.astype(bool).sum())}/{len(g)} | {g.seed.nunique()} |")
    return "\n".join(lines) + "\n"


def sharpness_masks(store: Store, rows):
    """One row per (sharpness artifact, mask): the network's curvature, the
    share of its |Hessian diagonal| on the weights the mask prunes, and that
    share over the share of weights pruned (``relative``: 1 = average curvature)."""
    import pandas as pd

    nan, out = float("nan"), []
    for row in rows.itertuples():
        artifact = store.get(row.id)
        if artifact is None:
            continue
        m = artifact.metrics
        for ref, mass in (m.get("masks") or {"-": None}).items():
            total = mass["total"] if mass else None
            count = total["kept_count"] + total["pruned_count"] if total else 0
            mask = store.get(ref) if total else None
            out.append({"sweep": row.sweep, "dataset": row.dataset, "model": row.model, "method": row.method,
                        "seed": row.seed, "network": f"{m['network']}:{m['checkpoint']}", "mask": ref,
                        "level": mask.metrics.get("level", nan) if mask else nan,
                        "sparsity": total["pruned_count"] / count if total else nan,
                        "pruned_share": total["pruned_mass"] / total["total_mass"] if total else nan,
                        "top_eigenvalue": m["top_eigenvalue"], "trace": m["trace_estimate"]})
    frame = pd.DataFrame(out, columns=["sweep", "dataset", "model", "method", "seed", "network", "mask", "level",
                                       "sparsity", "pruned_share", "top_eigenvalue", "trace"])
    return frame.assign(relative=frame.pruned_share / frame.sparsity)


def sharpness_table(masks) -> str:
    def shown(value, form: str) -> str:  # NaN: a dense network's row has no mask
        return "-" if value != value else form.format(value)

    lines = ["| sweep | method | seed | network | mask level | mask sparsity | "
             "share of \\|diag\\| on pruned weights | relative curvature of pruned weights | top eigenvalue | "
             "Hessian-diagonal trace |", "|---|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in masks.sort_values(["sweep", "method", "seed", "sparsity"], na_position="first").itertuples():
        lines.append(f"| {r.sweep or '-'} | {r.method} | {r.seed} | {r.network} | {shown(r.level, '{:.0f}')} | "
                     f"{shown(100 * r.sparsity, '{:.1f}%')} | {shown(100 * r.pruned_share, '{:.1f}%')} | "
                     f"{shown(r.relative, '{:.3f}')} | {r.top_eigenvalue:.4g} | {r.trace:.4g} |")
    return "\n".join(lines) + "\n"


def plot_pruned_curvature(masks, path: Path, title: str) -> None:
    """How curved the weights each method prunes are, relative to the average
    weight: (share of |Hessian diagonal| on pruned weights) / (share of weights
    pruned), against sparsity. 1: as curved as the average; above: sharper."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1, label="as curved as the average weight")
    for method, group in masks.groupby("method"):
        stats = group.groupby("level").agg(sparsity=("sparsity", "mean"), mean=("relative", "mean"),
                                           std=("relative", "std")).fillna(0.0)
        line, = ax.plot(100 * stats.sparsity, stats["mean"], marker="o", markersize=3, label=method)
        ax.fill_between(100 * stats.sparsity, stats["mean"] - stats["std"], stats["mean"] + stats["std"],
                        color=line.get_color(), alpha=0.2)
    ax.set_xlabel("weights pruned (%)")
    ax.set_ylabel("mean |Hessian diagonal| of pruned weights\n/ mean over all weights")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def copy_landscapes(store: Store, rows, out: Path) -> list[Path]:
    written = []
    for row in rows.itertuples():
        artifact = store.get(row.id)
        if artifact is not None and artifact.has_file("landscape.png"):
            dest = out / f"landscape_{row.sweep or 'unswept'}_{row.method}_level{row.level}_seed{row.seed}_{row.id[-6:]}.png"
            shutil.copyfile(artifact.file("landscape.png"), dest)
            written.append(dest)
    return written
