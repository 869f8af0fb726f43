"""Analysis ``weight_norm``: the L2 norm of a network's prunable weights at
the end of its training, one results row per selected network, and its
report section. The worked example of CONTRIBUTING.md, "An analysis": this
folder is the whole analysis."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from raylth.engine.models import prunable_weight_names
from raylth.reporting.sections import report_section
from raylth.specs import Spec, TrialSpec
from raylth.specs.base import choice
from raylth.stages.analyses import Analysis, register_analysis, selected
from raylth.stages.context import StageContext, ensure
from raylth.stages.networks import load_network
from raylth.stages.registry import Stage, level_of, method_network_kinds, register_stage
from raylth.store import Artifact, Store


@dataclass(frozen=True)
class WeightNormSettings(Spec):
    """What the artifact hashes beside the network: the checkpoint read."""
    kind = "weight_norm_settings"
    block = "weight_norm"
    checkpoint: str = choice("final", ("final", "init"))


@dataclass(frozen=True)
class WeightNormSpec(WeightNormSettings):
    kind = "weight_norm"
    path_prefix = ""
    network: str = ""  # the artifact id of a stored network


@dataclass(frozen=True)
class WeightNormOptions(WeightNormSettings):
    """A sweep trial's ``weight_norm:`` block."""
    kind = "weight_norm_options"
    levels: tuple[int, ...] = ()  # which levels of the trial (empty: all)


def run_weight_norm(spec: WeightNormSpec, ctx: StageContext) -> Artifact:
    network = load_network(ctx.store, spec.network)

    def compute() -> Artifact:
        weights = network.weights(spec.checkpoint)
        names = prunable_weight_names(ctx.model(network.model, ctx.dataset(network.data), seed=0))
        norm = float(torch.cat([weights[n].double().flatten() for n in names]).norm())
        metrics = {"weight_norm": norm, "level": network.level, "sparsity": network.sparsity}
        return ctx.store.finish(spec, ctx.store.partial(spec.id), metrics)

    return ensure(ctx, spec, compute)


def weight_norm_jobs(trial: TrialSpec, options: WeightNormOptions, networks: list[Spec]):
    jobs = []
    for network in networks:
        level = level_of(network)
        if network.kind in method_network_kinds() and selected(level, options.levels, networks):
            spec = WeightNormSpec(network=network.id, checkpoint=options.checkpoint)
            jobs.append((f"level={level},weight_norm", (spec,)))
    return jobs


register_stage(Stage(WeightNormSpec, run_weight_norm, origin=lambda spec, origin_of: origin_of(spec.network)))
register_analysis(Analysis(WeightNormOptions, jobs=weight_norm_jobs, columns=("weight_norm",)))


@report_section
def weight_norm_section(store: Store, frame, out: Path) -> dict[str, Path]:
    rows = frame[frame.stage == WeightNormSpec.kind]
    if rows.empty:
        return {}
    lines = ["| method | level | sparsity | weight norm |", "|---|---:|---:|---:|"]
    for r in rows.sort_values(["method", "level"]).itertuples():
        lines.append(f"| {r.method} | {r.level} | {100 * r.sparsity:.1f}% | {r.weight_norm:.3f} |")
    (out / "weight_norm.md").write_text("# Weight norms\n\n" + "\n".join(lines) + "\n")
    return {"weight_norm": out / "weight_norm.md"}
