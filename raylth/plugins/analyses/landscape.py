"""The loss landscape: stage ``landscape`` (``landscape_<hash>``), loss and
error on the plane through three stored networks (an lmc block's
``landscape: true`` adds the plane through child 0, child 1 and their
parent), with a contour plot; its report section copies the plots."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from raylth.engine.landscape import evaluate_plane, plot_plane
from raylth.errors import SpecError
from raylth.reporting.sections import report_section
from raylth.specs import Spec
from raylth.specs.base import choice
from raylth.specs.refs import check_network, split_ref
from raylth.stages.context import StageContext, ensure
from raylth.stages.networks import load_network
from raylth.stages.registry import Stage, register_stage
from raylth.store import Artifact, Store


@dataclass(frozen=True)
class LandscapeSpec(Spec):
    kind = "landscape"
    path_prefix = ""
    networks: tuple[str, ...] = ()   # three artifact ids[:checkpoint]
    resolution: int = 21
    margin: float = 0.25
    split: str = choice("test", ["test", "train"])
    limit: int | None = 2000

    def validate(self):
        if len(self.networks) != 3:
            raise SpecError(f"networks: a plane needs exactly 3 networks, got {len(self.networks)}")
        for i, ref in enumerate(self.networks):
            check_network(ref, f"networks[{i}]")
        if self.resolution < 2:
            raise SpecError(f"resolution: {self.resolution} must be >= 2")


def run_landscape(spec: LandscapeSpec, ctx: StageContext) -> Artifact:
    refs = [split_ref(ref) for ref in spec.networks]
    networks = [load_network(ctx.store, artifact_id) for artifact_id, _ in refs]
    weights = [net.weights(checkpoint) for net, (_, checkpoint) in zip(networks, refs)]

    def compute() -> Artifact:
        data = ctx.dataset(networks[0].data)
        model = ctx.evaluation_model(networks[0].model, data, seed=0)
        result = evaluate_plane(model, *weights, data, resolution=spec.resolution,
                                margin=spec.margin, split=spec.split, limit=spec.limit,
                                fast=ctx.fast_path)
        partial = ctx.store.partial(spec.id)
        labels = [f"{a}:{c}" for a, c in refs]
        short = [f"{a.split('_')[0]} {a.split('_')[1][:4]}:{c}" for a, c in refs]
        plot_plane(result, partial.path / "landscape.png",
                   title=f"{spec.split} error, level {networks[0].level}", labels=short)
        metrics = {**result, "networks": labels, "level": networks[0].level,
                   "sparsity": networks[0].sparsity}
        return ctx.store.finish(spec, partial, metrics)

    return ensure(ctx, spec, compute)


register_stage(Stage(LandscapeSpec, run_landscape,
                     origin=lambda spec, origin_of: origin_of(split_ref(spec.networks[0])[0])))


def copy_landscapes(store: Store, rows, out: Path) -> list[Path]:
    written = []
    for row in rows.itertuples():
        artifact = store.get(row.id)
        if artifact is not None and artifact.has_file("landscape.png"):
            dest = out / f"landscape_{row.sweep or 'unswept'}_{row.method}_level{row.level}_seed{row.seed}_{row.id[-6:]}.png"
            shutil.copyfile(artifact.file("landscape.png"), dest)
            written.append(dest)
    return written


@report_section
def landscape_section(store: Store, frame, out: Path) -> dict[str, Path]:
    return {f"plot:{p.stem}": p for p in copy_landscapes(store, frame[frame.stage == LandscapeSpec.kind], out)}
