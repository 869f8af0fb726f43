"""The instability section of ``raylth report``: instability.md,
instability_by_sparsity.md, error along the interpolation path, instability
against sparsity and against the spawn step k."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from raylth.reporting.axes import pyplot, save_axes, weights_remaining_axis
from raylth.reporting.sections import group_name, group_title, report_section
from raylth.plugins.analyses.lmc.specs import LmcSpec
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
    save_axes(plt, fig, ax, path, title, ylabel="test instability (error points)", legend_size=legend_size)


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


def side_by_side(rows) -> str:
    """Per sparsity, every network kind's test instability next to the
    others': (method, k) columns, mean ± std over seeds and pairs' means, and
    how many of its seeds were stable. Dense, distilled tickets, IMP tickets
    and random pruning at one sparsity on one line tell "stable because
    distilled" from "stable because sparse"."""
    rows = rows.assign(kind=[f"{m} k={k}" for m, k in zip(rows.method, rows.rewind)],
                       at=(100 * rows.sparsity).round(1))
    sparsest = rows.groupby("kind").sparsity.max()  # the dense network's kinds (sparsity 0) first
    kinds = sorted(rows.kind.unique(), key=lambda k: (sparsest[k] > 0, k))
    lines = ["| sparsity | " + " | ".join(kinds) + " |", "|---:|" + "---:|" * len(kinds)]
    for at, group in rows.groupby("at"):
        cells = []
        for kind in kinds:
            g = group[group.kind == kind]
            if g.empty:
                cells.append("-")
                continue
            spread = 100 * g.instability_test.std(ddof=1) if len(g) > 1 else 0.0
            cells.append(f"{100 * g.instability_test.mean():.2f} ± {spread:.2f} "
                         f"({int(g.stable.astype(bool).sum())}/{len(g)})")
        lines.append(f"| {at:.1f}% | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@report_section
def instability_section(store: Store, frame, out: Path) -> dict[str, Path]:
    """instability.md, error along the path per method and rewind step, and
    instability against sparsity (and against the rewind step, when several)."""
    written = {}
    lmc = frame[frame.stage == LmcSpec.kind].copy()
    if lmc.empty:
        return written
    lmc["spawn_iterations"] = [store.get(i).metrics.get("spawn_iterations", 0) for i in lmc.id]
    threshold = float(store.get(lmc.id.iloc[0]).spec.get("threshold", 0.02))
    (out / "instability.md").write_text("# Instability to SGD noise\n\n" + instability_table(lmc))
    written["instability"] = out / "instability.md"
    tables = []
    for keys, rows in lmc.groupby(["sweep", "dataset", "model"], dropna=False):
        tables.append(f"## {group_title(keys)}\n\n" + side_by_side(rows))
    (out / "instability_by_sparsity.md").write_text(
        "# Instability side by side, per sparsity\n\nTest instability in error points (mean ± std over seeds; "
        "each seed the mean over its pairs of children) and stable seeds / seeds, per network kind and spawn "
        "step k.\n\n" + "\n".join(tables))
    written["instability_by_sparsity"] = out / "instability_by_sparsity.md"
    for keys, rows in lmc.groupby(["sweep", "dataset", "model"], dropna=False):
        name, title = group_name(keys), group_title(keys)
        for (method, rewind), sub in rows.groupby(["method", "rewind"]):
            path = out / f"error_vs_alpha_{name}_{method}_k{rewind}.png"
            plot_error_vs_alpha(store, sub, path, f"{title}: {method}, k={rewind}")
            written[f"plot:{path.stem}"] = path
        plots = [("instability_vs_sparsity", plot_instability_vs_sparsity)]
        if rows.rewind.nunique() >= 2:
            plots.append(("instability_vs_rewind", plot_instability_vs_rewind))
        for kind, plot in plots:
            path = out / f"{kind}_{name}.png"
            plot(rows, path, title, threshold)
            written[f"plot:{path.stem}"] = path
    return written
