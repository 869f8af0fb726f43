"""``raylth report``: a Markdown table and PNG plots of accuracy vs sparsity."""

from __future__ import annotations

from pathlib import Path

from raylth.errors import RaylthError
from raylth.reporting.axes import pyplot, weights_remaining_axis
from raylth.reporting.distill import write_distill_report
from raylth.reporting.instability import (copy_landscapes, instability_table, plot_error_vs_alpha,
                                       plot_instability_vs_rewind, plot_instability_vs_sparsity,
                                       plot_pruned_curvature, sharpness_masks, sharpness_table)
from raylth.reporting.results import COLUMNS, network_rows, results_frame
from raylth.store import Store

GROUP = ["sweep", "dataset", "model", "method", "level"]


def summarize(frame):
    """Mean and spread over seeds of sparsity and test accuracy per method and level."""
    grouped = frame.groupby(GROUP, dropna=False)
    out = grouped.agg(sparsity=("sparsity", "mean"), test_acc_mean=("test_acc", "mean"),
                      test_acc_std=("test_acc", "std"), seeds=("seed", "nunique")).reset_index()
    out["test_acc_std"] = out["test_acc_std"].fillna(0.0)
    return out.sort_values(GROUP).reset_index(drop=True)


def markdown_table(summary) -> str:
    lines = ["| sweep | dataset | model | method | level | sparsity | test acc (mean ± std) | seeds |",
             "|---|---|---|---|---:|---:|---:|---:|"]
    for r in summary.itertuples():
        lines.append(f"| {r.sweep or '-'} | {r.dataset} | {r.model} | {r.method} | {r.level} | "
                     f"{100 * r.sparsity:.1f}% | {100 * r.test_acc_mean:.2f} ± {100 * r.test_acc_std:.2f} | {r.seeds} |")
    return "\n".join(lines) + "\n"


def plot_accuracy_vs_sparsity(summary, path: Path, title: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, rows in summary.groupby("method"):
        rows = rows.sort_values("sparsity")
        remaining = 100 * (1 - rows["sparsity"])
        mean, std = 100 * rows["test_acc_mean"], 100 * rows["test_acc_std"]
        if len(rows) == 1:  # a dense baseline: a horizontal reference line
            ax.axhline(mean.iloc[0], linestyle="--", color="grey", label=f"{method}")
            ax.axhspan(mean.iloc[0] - std.iloc[0], mean.iloc[0] + std.iloc[0], color="grey", alpha=0.15)
            continue
        ax.plot(remaining, mean, marker="o", markersize=3, label=method)
        ax.fill_between(remaining, mean - std, mean + std, alpha=0.2)
    weights_remaining_axis(ax, summary["sparsity"].max())
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(storage, out, sweep: str | None = None) -> dict[str, Path]:
    frame = results_frame(storage, sweep)
    if frame.empty:
        raise RaylthError(f"{storage}: no finished results to report; run a sweep first "
                          "(raylth run sweeps/quickstart.yaml)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frame[COLUMNS].to_csv(out / "results.csv", index=False)
    summary = summarize(network_rows(frame))
    written = {"results": out / "results.csv", "table": out / "summary.md"}
    (out / "summary.md").write_text("# Test accuracy vs sparsity\n\n" + markdown_table(summary))
    for keys, rows in summary.groupby(["sweep", "dataset", "model"]):
        name = _name(keys)
        path = out / f"accuracy_vs_sparsity_{name}.png"
        plot_accuracy_vs_sparsity(rows, path, f"{keys[0] or 'unswept'}: {keys[2]} on {keys[1]}")
        written[f"plot:{name}"] = path
    written |= _instability_report(Store(storage), frame, out)
    written |= write_distill_report(Store(storage), frame, out)
    return written


def _name(keys) -> str:
    return "-".join(str(k) for k in keys if k) or "results"


def _instability_report(store: Store, frame, out: Path) -> dict[str, Path]:
    written = {}
    lmc = frame[frame.stage == "lmc"].copy()
    if not lmc.empty:
        lmc["spawn_iterations"] = [store.get(i).metrics.get("spawn_iterations", 0) for i in lmc.id]
        threshold = float(store.get(lmc.id.iloc[0]).spec.get("threshold", 0.02))
        (out / "instability.md").write_text("# Instability to SGD noise\n\n" + instability_table(lmc))
        written["instability"] = out / "instability.md"
        for keys, rows in lmc.groupby(["sweep", "dataset", "model"], dropna=False):
            name, title = _name(keys), f"{keys[0] or 'unswept'}: {keys[2]} on {keys[1]}"
            for kind, plot in (("error_vs_alpha", None), ("instability_vs_sparsity", plot_instability_vs_sparsity),
                               ("instability_vs_rewind", plot_instability_vs_rewind)):
                path = out / f"{kind}_{name}.png"
                if plot is None:
                    for (method, rewind), sub in rows.groupby(["method", "rewind"]):
                        path = out / f"{kind}_{name}_{method}_k{rewind}.png"
                        plot_error_vs_alpha(store, sub, path, f"{title}: {method}, k={rewind}")
                        written[f"plot:{path.stem}"] = path
                    continue
                if kind == "instability_vs_rewind" and rows.rewind.nunique() < 2:
                    continue
                plot(rows, path, title, threshold)
                written[f"plot:{path.stem}"] = path
    sharp = frame[frame.stage == "sharpness"]
    if not sharp.empty:
        masks = sharpness_masks(store, sharp)
        (out / "sharpness.md").write_text("# Sharpness\n\n" + sharpness_table(masks))
        written["sharpness"] = out / "sharpness.md"
        for keys, rows in masks[masks.sparsity.notna()].groupby(["sweep", "dataset", "model"], dropna=False):
            path = out / f"pruned_curvature_{_name(keys)}.png"
            plot_pruned_curvature(rows, path, f"{keys[0] or 'unswept'}: {keys[2]} on {keys[1]}, "
                                              "curvature on pruned weights")
            written[f"plot:{path.stem}"] = path
    for path in copy_landscapes(store, frame[frame.stage == "landscape"], out):
        written[f"plot:{path.stem}"] = path
    return written
