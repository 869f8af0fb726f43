"""Method ``distill``: a distilled set of the trial's data, its evaluation by
the trial's ``distill_eval`` protocol and a random real subset of the same
size under the same evaluation (the baseline); and the report section
``distillation.md`` with ``distillation_<sweep>-<data>-ipc<N>.png``: each set
against its baseline (mean ± std over the evaluation seeds)."""

from __future__ import annotations

from pathlib import Path

from raylth.reporting.axes import pyplot
from raylth.reporting.sections import group_name, report_section
from raylth.specs import DistillEvalSpec, DistillSpec
from raylth.stages.distill import check_trial_distill, trial_distill
from raylth.stages.methods import Method, register_method
from raylth.store import Store


def artifacts(trial) -> list:
    d = trial_distill(trial)
    options = trial.distill_eval or DistillEvalSpec()
    return [d, options.of(d), options.of(d, random=True)]


register_method(Method("distill", artifacts=artifacts, check=lambda trial: check_trial_distill(trial, "distill"),
                       pruning=False, implies=(DistillSpec.kind, DistillEvalSpec.kind),
                       example={"levels": 0, "distill": {"method": "dm", "ipc": 2, "iterations": 2,
                                                         "model": {"name": "lenet"}},
                                "distill_eval": {"model": {"name": "lenet"}, "epochs": 2, "seeds": [0]}}))


@report_section
def distillation_section(store: Store, frame, out: Path) -> dict[str, Path]:
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
