"""Training curves in ``raylth report``: the dense network's test accuracy
through its training, one line per seed, the learning-rate decays marked, so
a reader sees whether training ran long enough to flatten (an undertrained
dense network makes every pruned network's comparison with it misleading)."""

from __future__ import annotations

from pathlib import Path

from raylth.reporting.axes import pyplot, save_axes
from raylth.reporting.sections import group_name, group_title, report_section
from raylth.specs import TrainStageSpec
from raylth.stages.registry import stored_spec
from raylth.store import Store

MIN_POINTS = 3  # fewer evaluations draw no curve


def dense_curves(store: Store, rows) -> list[dict]:
    """Per dense network: its seed, evaluations (epoch, test accuracy) and lr decays (epochs)."""
    out = []
    for row in rows.drop_duplicates("id").itertuples():
        artifact = store.get(row.id)
        history = (artifact.metrics.get("history") or []) if artifact is not None else []
        if len(history) < MIN_POINTS:
            continue
        spec = stored_spec(artifact)
        per_epoch = int(artifact.metrics.get("steps_per_epoch") or 1)
        decays = [m.iterations(per_epoch) / per_epoch for m in spec.train.milestones] \
            if spec.train.schedule == "multistep" else []
        out.append({"seed": row.seed, "epochs": [h["epoch"] for h in history],
                    "acc": [100 * h["test_acc"] for h in history], "decays": decays})
    return out


def plot_curves(curves: list[dict], path: Path, title: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for curve in sorted(curves, key=lambda c: c["seed"]):
        ax.plot(curve["epochs"], curve["acc"], marker="o", markersize=2, label=f"seed {curve['seed']}")
    for i, epoch in enumerate(sorted({e for c in curves for e in c["decays"]})):
        ax.axvline(epoch, color="grey", linestyle="--", linewidth=1, label="lr decay" if i == 0 else None)
    save_axes(plt, fig, ax, path, title, xlabel="epoch", ylabel="test accuracy (%)")


@report_section
def curves_section(store: Store, frame, out: Path) -> dict[str, Path]:
    dense = frame[frame.stage == TrainStageSpec.kind]  # a dense run, of a dense or an IMP trial
    written = {}
    for keys, rows in dense.groupby(["sweep", "dataset", "model"], dropna=False):
        curves = dense_curves(store, rows)
        if curves:
            path = out / f"dense_training_{group_name(keys)}.png"
            plot_curves(curves, path, f"{group_title(keys)}: the dense network's training")
            written[f"plot:{path.stem}"] = path
    return written
