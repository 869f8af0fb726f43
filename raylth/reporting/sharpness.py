"""The sharpness section of ``raylth report``: sharpness.md and the
curvature of each method's pruned weights against sparsity."""

from __future__ import annotations

from pathlib import Path

from raylth.reporting.axes import pyplot
from raylth.reporting.sections import group_name, group_title, report_section
from raylth.specs import SharpnessSpec
from raylth.store import Store


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


@report_section
def sharpness_section(store: Store, frame, out: Path) -> dict[str, Path]:
    sharp = frame[frame.stage == SharpnessSpec.kind]
    if sharp.empty:
        return {}
    masks = sharpness_masks(store, sharp)
    (out / "sharpness.md").write_text("# Sharpness\n\n" + sharpness_table(masks))
    written = {"sharpness": out / "sharpness.md"}
    for keys, rows in masks[masks.sparsity.notna()].groupby(["sweep", "dataset", "model"], dropna=False):
        path = out / f"pruned_curvature_{group_name(keys)}.png"
        plot_pruned_curvature(rows, path, f"{group_title(keys)}, curvature on pruned weights")
        written[f"plot:{path.stem}"] = path
    return written
