"""``raylth report``: a Markdown table and PNG plots of accuracy vs sparsity."""

from __future__ import annotations

from pathlib import Path

from raylth.errors import RaylthError
from raylth.reporting.axes import pyplot, weights_remaining_axis
from raylth.reporting.results import columns, network_rows, results_frame
from raylth.reporting.sections import SECTIONS, group_name, group_title
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
    frame[columns()].to_csv(out / "results.csv", index=False)
    summary = summarize(network_rows(frame))
    written = {"results": out / "results.csv", "table": out / "summary.md"}
    (out / "summary.md").write_text("# Test accuracy vs sparsity\n\n" + markdown_table(summary))
    for keys, rows in summary.groupby(["sweep", "dataset", "model"]):
        name = group_name(keys)
        path = out / f"accuracy_vs_sparsity_{name}.png"
        plot_accuracy_vs_sparsity(rows, path, group_title(keys))
        written[f"plot:{name}"] = path
    store = Store(storage)
    for section in SECTIONS:
        written |= section(store, frame, out)
    return written
