"""The pruning comparison of ``raylth report`` (read only the store):
``distilled_pruning.md`` and ``distilled_pruning_<sweep-dataset-model>.png``,
test accuracy against sparsity and against the training points of the
pruning loop, for every pruning method side by side (mean ± std over seeds),
in sweeps with distilled tickets.

Loop points (the x axis, and the results table's ``search_points``; training
points = SGD steps x batch): the points of every training of the pruning loop
that produced the level-L network, levels 0..L:
- dense: its own training; imp level L: real levels 0..L;
- random_prune / reinit level L: the IMP trunk's levels 0..L-1 (they give
  the mask or its per-layer counts) plus its own training;
- distilled_imp / distilled_random level L: the distilled trunk's levels 0..L
  (the ticket artifact's stored ``points_seen``); the ticket's final training
  on the real data is an evaluation outside the loop (stored as
  ``train_points_seen``; the results table's ``points_seen``);
- mask_then_imp level L: the distilled trunk's levels 0..start_level, the
  start ticket's real training, and the real levels start_level+1..L.
"""

from __future__ import annotations

from pathlib import Path

from raylth.plugins.methods.distilled.specs import MaskImpSpec, TicketSpec
from raylth.reporting.axes import pyplot, weights_remaining_axis
from raylth.reporting.sections import group_name, report_section
from raylth.stages.methods import pruning_methods
from raylth.stages.registry import method_network_kinds
from raylth.store import Store


@report_section
def distilled_pruning_section(store: Store, frame, out: Path) -> dict[str, Path]:
    nets = frame[frame.method.isin(pruning_methods()) & frame.stage.isin(method_network_kinds())]
    groups = [(keys, rows) for keys, rows in nets.groupby(["sweep", "dataset", "model"], dropna=False)
              if rows.stage.isin((TicketSpec.kind, MaskImpSpec.kind)).any()]
    if not groups:
        return {}
    tables, written = [], {}
    for keys, rows in groups:
        rows = rows.drop_duplicates(["method", "id"]).copy()
        rows["loop_points"] = rows.search_points  # the results' columns (raylth.reporting.results)
        rows["ticket_points"] = rows.points_seen.where(rows.stage == TicketSpec.kind)
        summary = rows.groupby(["method", "level"]).agg(
            sparsity=("sparsity", "mean"), acc=("test_acc", "mean"), acc_std=("test_acc", "std"),
            points=("loop_points", "mean"), ticket_points=("ticket_points", "mean"),
            seeds=("seed", "nunique")).reset_index().fillna({"acc_std": 0.0})
        title = f"{keys[0] or 'unswept'}: {keys[2]} on {keys[1]}"
        tables.append(_table(title, summary))
        path = out / f"distilled_pruning_{group_name(keys)}.png"
        _plot(summary, path, title)
        written[f"plot:{path.stem}"] = path
    intro = ("# Distilled pruning\n\nTest accuracy (mean ± std over seeds) against sparsity and against the "
             "training points of the pruning loop up to each level (SGD steps x batch): imp = real levels "
             "0..L; distilled_imp = distilled levels 0..L (its tickets' training on the real data, a final "
             "evaluation, is listed apart); mask_then_imp = distilled levels 0..start, the start ticket's "
             "real training and real levels start+1..L; random_prune/reinit = the IMP trunk to L-1 plus "
             "their own training.\n\n")
    (out / "distilled_pruning.md").write_text(intro + "\n".join(tables))
    written["distilled_pruning"] = out / "distilled_pruning.md"
    return written


def _order(method: str) -> int:
    methods = pruning_methods()
    return methods.index(method) if method in methods else len(methods)


def _table(title: str, summary) -> str:
    lines = [f"## {title}\n", "| method | level | sparsity | test acc (mean ± std) | loop points | "
             "ticket training points | seeds |", "|---|---:|---:|---:|---:|---:|---:|"]
    summary = summary.assign(order=summary.method.map(_order)).sort_values(["order", "level"])
    for r in summary.itertuples():
        ticket = f"{r.ticket_points:,.0f}" if r.ticket_points == r.ticket_points else "-"
        loop = f"{r.points:,.0f}" if r.points == r.points else "-"
        accuracy = f"{100 * r.acc:.2f} ± {100 * r.acc_std:.2f}"
        lines.append(f"| {r.method} | {r.level} | {100 * r.sparsity:.1f}% | {accuracy} | {loop} | {ticket} | {r.seeds} |")
    return "\n".join(lines) + "\n"


def _plot(summary, path: Path, title: str) -> None:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    colors = {}
    for method, rows in sorted(summary.groupby("method"), key=lambda kv: _order(kv[0])):
        rows = rows.sort_values("level")
        mean, std = 100 * rows.acc, 100 * rows.acc_std
        if (rows.sparsity == 0).all():  # the dense network: a reference line
            for ax in (left, right):
                ax.axhline(mean.iloc[0], linestyle="--", color="grey", label=method)
                ax.axhspan(mean.iloc[0] - std.iloc[0], mean.iloc[0] + std.iloc[0], color="grey", alpha=0.15)
            right.plot(rows.points, mean, marker="*", markersize=9, color="grey", linestyle="none")
            continue
        line, = left.plot(100 * (1 - rows.sparsity), mean, marker="o", markersize=3, label=method,
                          color=colors.get(method))
        left.fill_between(100 * (1 - rows.sparsity), mean - std, mean + std, color=line.get_color(), alpha=0.2)
        right.errorbar(rows.points, mean, yerr=std, marker="o", markersize=3, label=method,
                       color=line.get_color(), capsize=2)
    weights_remaining_axis(left, summary["sparsity"].max())
    left.set_ylabel("test accuracy (%)")
    left.set_title("accuracy vs sparsity")
    right.set_xscale("log")
    right.set_xlabel("training points of the pruning loop up to the level (log)")
    right.set_title("accuracy vs points seen")
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
