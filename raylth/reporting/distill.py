"""Reports of dataset distillation and distilled pruning (read only the store).

- ``distilled_pruning.md`` and ``distilled_pruning_<sweep-dataset-model>.png``:
  test accuracy against sparsity and against the training points of the
  pruning loop, for dense, imp, random_prune, reinit, distilled_imp and
  mask_then_imp side by side (mean ± std over seeds).
- ``distillation.md`` and ``distillation_<sweep-dataset-ipc>.png``: each
  evaluated distilled set against a random real subset of the same size
  under the same evaluation (mean ± std over the evaluation seeds).

Loop points (the x axis, and the results table's ``search_points``; training
points = SGD steps x batch): the points of every training of the pruning loop
that produced the level-L network, levels 0..L:
- dense: its own training; imp level L: real levels 0..L;
- random_prune / reinit level L: the IMP trunk's levels 0..L-1 (they give
  the mask or its per-layer counts) plus its own training;
- distilled_imp level L: the distilled trunk's levels 0..L (the ticket
  artifact's stored ``points_seen``); the ticket's final training on the real
  data is an evaluation outside the loop (stored as ``train_points_seen``; the
  results table's ``points_seen``);
- mask_then_imp level L: the distilled trunk's levels 0..start_level, the
  start ticket's real training, and the real levels start_level+1..L.
"""

from __future__ import annotations

from pathlib import Path

from raylth.reporting.axes import pyplot, weights_remaining_axis
from raylth.reporting.sections import group_name, report_section
from raylth.specs import DistillEvalSpec, TicketSpec
from raylth.stages.registry import method_network_kinds
from raylth.store import Store

PRUNING_METHODS = ("dense", "imp", "random_prune", "reinit", "distilled_imp", "distilled_random", "mask_then_imp")
DISTILLED_METHODS = ("distilled_imp", "mask_then_imp")


# -- loop points ------------------------------------------------------------------------------
class Points:
    """Training points of stored artifacts (their metrics), for the stages'
    ``loop_points`` facts."""

    def __init__(self, store: Store):
        self.store, self.cache = store, {}

    def own(self, artifact_id: str, key: str = "points_seen") -> float:
        if artifact_id not in self.cache:
            artifact = self.store.get(artifact_id)
            self.cache[artifact_id] = artifact.metrics if artifact is not None else {}
        value = self.cache[artifact_id].get(key)
        return float(value) if value is not None else float("nan")

    def trunk(self, spec, upto: int) -> float:
        """An ImpLevelSpec trunk's levels 0..upto."""
        chain = [spec.trunk_root()] + [spec.at_level(level) for level in range(1, upto + 1)]
        return sum(self.own(s.id) for s in chain)


# -- the report ----------------------------------------------------------------------------------
@report_section
def distill_section(store: Store, frame, out: Path) -> dict[str, Path]:
    written = {}
    written |= _distilled_pruning(store, frame, out)
    written |= _distillation(store, frame, out)
    return written


def _distilled_pruning(store: Store, frame, out: Path) -> dict[str, Path]:
    nets = frame[frame.method.isin(PRUNING_METHODS) & frame.stage.isin(method_network_kinds())]
    groups = [(keys, rows) for keys, rows in nets.groupby(["sweep", "dataset", "model"], dropna=False)
              if rows.method.isin(DISTILLED_METHODS).any()]
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
    return PRUNING_METHODS.index(method) if method in PRUNING_METHODS else len(PRUNING_METHODS)


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
        if method == "dense":
            for ax in (left, right):
                ax.axhline(mean.iloc[0], linestyle="--", color="grey", label="dense")
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


def _distillation(store: Store, frame, out: Path) -> dict[str, Path]:
    evals = frame[frame.stage == DistillEvalSpec.kind].drop_duplicates("id")
    records = []
    for row in evals.itertuples():
        artifact = store.get(row.id)
        if artifact is None or artifact.metrics.get("random"):
            continue
        spec = DistillEvalSpec.from_stored(artifact.spec)
        d = spec.distill
        baseline = store.get(spec.of(d, random=True).id)
        source = store.get(d.id)
        protocol = "" if spec.protocol == "dc" else f" ({spec.protocol} protocol)"
        records.append({"sweep": row.sweep or "-", "dataset": d.data.name, "ipc": d.ipc, "distill": d,
                        "eval_model": spec.model.name + protocol, "seeds": len(spec.seeds), "metrics": artifact.metrics,
                        "random": baseline.metrics if baseline is not None else None,
                        "wall": source.metrics["wall_s"] if source is not None else None})
    if not records:
        return {}
    lines = sorted({_distillation_line(r) for r in records})
    head = ["# Distilled sets vs random real subsets of the same size\n",
            "Each set trains fresh networks with DSA for the evaluation's epochs, tested on the real test split; "
            "mean ± std over the evaluation seeds. The baseline is a random real subset of ipc images per "
            "class under the same evaluation.\n",
            "| sweep | dataset | method | ipc | distilled with | evaluated on | distilled acc | random subset acc "
            "| gain (pts) | seeds | distill wall s | id |",
            "|---|---|---|---:|---|---|---:|---:|---:|---:|---:|---|"]
    (out / "distillation.md").write_text("\n".join(head + lines) + "\n")
    written = {"distillation": out / "distillation.md"}
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["sweep"], r["dataset"], f"ipc{r['ipc']}"), []).append(r)
    for keys, group in sorted(groups.items()):
        path = out / f"distillation_{group_name(keys)}.png"
        _distillation_plot(group, path, f"{keys[0]}: {keys[1]}, {keys[2][3:]} image(s) per class")
        written[f"plot:{path.stem}"] = path
    return written


def _set_name(d) -> str:
    return d.method + (f" x{d.factor}" if d.factor > 1 else "") + (" zca" if d.zca else "")


def _distillation_line(r: dict) -> str:
    d, m, rand = r["distill"], r["metrics"], r["random"]
    accuracy = f"{100 * m['test_acc']:.2f} ± {100 * m['test_acc_std']:.2f}"
    if m.get("best_test_acc") is not None:  # IDC's protocol reports the best of its evaluations too
        accuracy += f" (best {100 * m['best_test_acc']:.2f})"
    baseline = f"{100 * rand['test_acc']:.2f} ± {100 * rand['test_acc_std']:.2f}" if rand else "-"
    if rand and rand.get("best_test_acc") is not None:
        baseline += f" (best {100 * rand['best_test_acc']:.2f})"
    gain = f"{100 * (m['test_acc'] - rand['test_acc']):+.2f}" if rand else "-"
    wall = f"{r['wall']:.1f}" if r["wall"] is not None else "-"
    return (f"| {r['sweep']} | {d.data.name} | {_set_name(d)} | {d.ipc} | {d.model.name} | {r['eval_model']} | "
            f"{accuracy} | {baseline} | {gain} | {r['seeds']} | {wall} | {d.id} |")


def _distillation_plot(group: list[dict], path: Path, title: str) -> None:
    """One bar per distilled set (mean ± std over evaluation seeds) against the random subsets' band."""
    plt = pyplot()
    group = sorted(group, key=lambda r: (_set_name(r["distill"]), r["distill"].id))
    names = [_set_name(r["distill"]) for r in group]
    names = [f"{n}\n{r['distill'].id[-6:]}" if names.count(n) > 1 else n for n, r in zip(names, group)]
    fig, ax = plt.subplots(figsize=(max(4.5, 1.3 * len(group) + 2), 4.2))
    x = range(len(group))
    ax.bar(x, [100 * r["metrics"]["test_acc"] for r in group],
           yerr=[100 * r["metrics"]["test_acc_std"] for r in group], capsize=4, color="tab:blue", alpha=0.8,
           label="distilled set")
    randoms = {r["random"]["test_acc"]: r["random"] for r in group if r["random"]}
    for i, rand in enumerate(randoms.values()):
        mean, std = 100 * rand["test_acc"], 100 * rand["test_acc_std"]
        ax.axhline(mean, color="grey", linestyle="--", label="random real subset" if i == 0 else None)
        ax.axhspan(mean - std, mean + std, color="grey", alpha=0.15)
    ax.set_xticks(list(x), names, fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
