"""The weight-distance section of ``raylth report``: distance.md (per method
and level, the mean over seeds of the distance between two children) and a
plot of it against sparsity."""

from __future__ import annotations

from pathlib import Path

from raylth.reporting.axes import pyplot
from raylth.reporting.sections import group_name, group_title, report_section
from raylth.specs.analysis import DistanceSpec
from raylth.store import Store


@report_section
def distance_section(store: Store, frame, out: Path) -> dict[str, Path]:
    rows = frame[frame.stage == DistanceSpec.kind].copy()
    if rows.empty:
        return {}
    rows["distance"] = [store.get(i).metrics["distance"] for i in rows.id]
    keys = ["sweep", "dataset", "model", "method", "level"]
    summary = rows.groupby(keys, dropna=False).agg(
        sparsity=("sparsity", "mean"), mean=("distance", "mean"), std=("distance", "std"),
        seeds=("seed", "nunique")).reset_index().fillna({"std": 0.0})
    lines = ["| sweep | dataset | model | method | level | sparsity | distance between children (mean ± std) "
             "| seeds |", "|---|---|---|---|---:|---:|---:|---:|"]
    for r in summary.itertuples():
        lines.append(f"| {r.sweep or '-'} | {r.dataset} | {r.model} | {r.method} | {r.level} | "
                     f"{100 * r.sparsity:.1f}% | {r.mean:.4f} ± {r.std:.4f} | {r.seeds} |")
    (out / "distance.md").write_text("# Distance between children\n\n" + "\n".join(lines) + "\n")
    written = {"distance": out / "distance.md"}
    for group, g in summary.groupby(["sweep", "dataset", "model"], dropna=False):
        path = out / f"distance_vs_sparsity_{group_name(group)}.png"
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for method, m in g.sort_values("sparsity").groupby("method"):
            ax.errorbar(100 * m.sparsity, m["mean"], yerr=m["std"], marker="o", markersize=3, capsize=3,
                        label=method)
        ax.set_xlabel("weights pruned (%)")
        ax.set_ylabel("||w_child0 - w_child1|| / ||w_child0||")
        ax.set_title(group_title(group))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written[f"plot:{path.stem}"] = path
    return written
