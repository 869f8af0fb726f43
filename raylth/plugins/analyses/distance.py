"""Analysis ``distance``: how far apart two children of one parent end up,
layer by layer (||w_0 - w_1|| / ||w_0|| over each prunable layer's weights,
pruned weights included: they are zero in both); the children are the lmc
analysis's (shared). Its report section: distance.md and distance against
sparsity."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from raylth.engine.models import prunable_weight_names
from raylth.plugins.analyses.lmc import ChildSpec, SpawnsChildren, run_child
from raylth.plugins.analyses.lmc.stages import parents_method, spawned_origin
from raylth.plugins.analyses.lmc.specs import NOISES
from raylth.reporting.axes import pyplot, save_axes
from raylth.reporting.sections import group_name, group_title, report_section
from raylth.specs import Spec, Step, TrialSpec
from raylth.specs.base import choice
from raylth.stages.analyses import Analysis, register_analysis, selected
from raylth.stages.context import StageContext, ensure
from raylth.stages.networks import load_network
from raylth.stages.registry import Stage, level_of, register_stage
from raylth.store import Artifact, Store


@dataclass(frozen=True)
class DistanceSettings(Spec):
    """What a weight-distance analysis hashes: which children it compares."""
    kind = "distance_settings"
    block = "distance"
    noise: str = choice("both", NOISES)


@dataclass(frozen=True)
class DistanceSpec(SpawnsChildren, DistanceSettings):
    """Per-layer distance between children 0 and 1 of a parent spawned at one
    step: ||w_0 - w_1|| / ||w_0|| over each prunable layer's weights."""
    kind = "distance"
    path_prefix = ""
    parent: str = ""
    spawn: Step = Step(0, "it")

    def validate(self):
        ChildSpec(parent=self.parent, spawn=self.spawn, noise=self.noise)

    def inputs(self) -> tuple[ChildSpec, ...]:
        return (self.child(0), self.child(1))


@dataclass(frozen=True)
class DistanceOptions(DistanceSettings):
    """A sweep trial's ``distance:`` block."""
    kind = "distance_options"
    levels: tuple[int, ...] = ()  # which levels of the trial (empty: all)


def layer_distances(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], names: list[str]) -> dict[str, float]:
    out = {}
    for name in names:
        wa, wb = a[name].double(), b[name].double()
        out[name] = float((wa - wb).norm() / wa.norm().clamp_min(1e-12))
    return out


def run_distance(spec: DistanceSpec, ctx: StageContext) -> Artifact:
    parent = load_network(ctx.store, spec.parent)
    parent.at_step(spec.spawn)  # fails clearly before anything is written

    def compute() -> Artifact:
        a, b = (run_child(spec.child(i), ctx).weights("final") for i in (0, 1))
        data = ctx.dataset(parent.data)
        names = prunable_weight_names(ctx.model(parent.model, data, seed=0))
        layers = layer_distances(a, b, names)
        total = layer_distances({"all": torch.cat([a[n].flatten() for n in names])},
                                {"all": torch.cat([b[n].flatten() for n in names])}, ["all"])["all"]
        metrics = {"layers": layers, "distance": total, "level": parent.level, "sparsity": parent.sparsity,
                   "children": [spec.child(i).id for i in (0, 1)]}
        return ctx.store.finish(spec, ctx.store.partial(spec.id), metrics)

    return ensure(ctx, spec, compute)


def distance_jobs(trial: TrialSpec, options: DistanceOptions, networks: list[Spec]):
    """One job per selected network: its two children (made by the lmc block's
    jobs when the trial has one, else by this job) and their distance."""
    jobs = []
    for network in networks:
        level = level_of(network)
        if selected(level, options.levels, networks):
            spec = DistanceSpec(parent=network.id, spawn=trial.prune.rewind, noise=options.noise)
            jobs.append((f"level={level},distance", (spec,)))
    return jobs


register_stage(Stage(DistanceSpec, run_distance, method=parents_method, origin=spawned_origin))
register_analysis(Analysis(DistanceOptions, jobs=distance_jobs, columns=("distance",), order=2))


@report_section
def distance_section(store: Store, frame, out: Path) -> dict[str, Path]:
    rows = frame[frame.stage == DistanceSpec.kind].copy()  # its results rows hold their distance
    if rows.empty:
        return {}
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
        save_axes(plt, fig, ax, path, group_title(group), xlabel="weights pruned (%)",
                  ylabel="||w_child0 - w_child1|| / ||w_child0||")
        written[f"plot:{path.stem}"] = path
    return written
