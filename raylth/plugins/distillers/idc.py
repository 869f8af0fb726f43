"""IDC's condensation (Kim et al., ICML 2022) as its ``--reproduce`` settings
for CIFAR run it (raylth.engine.distill.idc): the paper's distilled data.
Every knob is a field with IDC's value as its default."""

from __future__ import annotations

from dataclasses import dataclass

from raylth.engine.distill.idc import METRICS, IdcSettings, distill_idc
from raylth.errors import SpecError
from raylth.specs import Spec
from raylth.specs.base import choice, id_field
from raylth.specs.groups import DSA_FAMILIES
from raylth.stages.distill import Distilled, Distiller, register_distiller
from raylth.stages.memory import check_matching


@dataclass(frozen=True)
class IdcOptions(Spec):
    kind = "idc_options"
    block = "distill"
    # IDC's own defaults of fields other methods share (ids: the shared defaults written out)
    factor: int = id_field(2, 1, "multi-formation: factor x factor mosaics")
    outer_loop: int = id_field(100, 1, "matching steps per fresh network (IDC's inner_loop)")
    batch_real: int = id_field(64, 256, "real images per class and step; the network's batches")
    batch_syn: int | None = id_field(128, None, "decoded synthetic images per class and step, at most")
    lr_net: float = 0.01
    n_data: int = 2000                     # real images the network trains on after each matching step
    metric: str = choice("mse", METRICS)   # the gradient distance
    match_ops: str = "color_crop_cutout"   # DSA families augmenting real and synthetic together (one draw)
    cutmix: float = 0.5                    # CutMix's probability in the network's training

    def validate(self):
        w = "distill"
        for name in ("outer_loop", "batch_real", "batch_syn"):
            if getattr(self, name) is None or getattr(self, name) < 1:
                raise SpecError(f"{w}.{name}: {getattr(self, name)} must be >= 1 (IDC: outer_loop 100, batch_real 64, "
                                "batch_syn 128)")
        if self.factor < 1:
            raise SpecError(f"{w}.factor: {self.factor} must be >= 1 (IDC: 2)")
        if self.n_data < 0:
            raise SpecError(f"{w}.n_data: {self.n_data} must be >= 0 (real images the network trains on after "
                            "each matching step; IDC: 2000)")
        if self.lr_net <= 0:
            raise SpecError(f"{w}.lr_net: {self.lr_net} must be positive (IDC: 0.01)")
        if not 0 <= self.cutmix <= 1:
            raise SpecError(f"{w}.cutmix: {self.cutmix} is a probability per batch; use a value in [0, 1] (IDC: 0.5)")
        ops = self.match_ops.split("_") if self.match_ops else []
        unknown = [op for op in ops if op not in DSA_FAMILIES]
        if unknown or not ops:
            raise SpecError(f"{w}.match_ops: {unknown[0] if unknown else self.match_ops!r} is not a DSA "
                            f"augmentation; join some of {', '.join(DSA_FAMILIES)} with _ (IDC: color_crop_cutout)")


def check(spec, w: str) -> None:
    if spec.zca:
        raise SpecError(f"{w}.zca: IDC condenses [0, 1] pixels (clamped), not ZCA-whitened images; "
                        "leave zca out with method idc")


def lr_img(spec) -> float:
    """IDC's tune_lr_img: 5e-3 at 10 images per class, in proportion to ipc (32x32 images)."""
    return 5e-3 * spec.ipc / 10


def run(spec, ctx, real, s) -> Distilled:
    """IDC condenses [0, 1] pixels and normalises inside its augmentation; the
    set is stored in the normalised space, as every distilled set."""
    scale = real.pixel_max
    pixels = real.train_x.to(ctx.device).float() / scale

    def normalize(x):
        return real.normalize(x * scale)

    settings = IdcSettings(ipc=spec.ipc, factor=spec.factor, iterations=spec.iterations, steps=spec.outer_loop,
                           lr_img=spec.lr_img_value, batch_real=spec.batch_real, batch_syn=spec.batch_syn,
                           n_data=spec.n_data, lr_net=spec.lr_net, metric=spec.metric,
                           match_ops=spec.match_ops if spec.dsa else "none", cutmix=spec.cutmix, init=spec.init)
    callback = s.common["callback"]
    images, labels = distill_idc(pixels, real.train_y.to(ctx.device), s.num_classes, s.model_fn, normalize, settings,
                                 generator=s.common["generator"],
                                 callback=lambda it, loss, now: callback(it, loss, normalize(now)))
    return Distilled(normalize(images), labels)


register_distiller(Distiller("idc", IdcOptions, lr_img=lr_img, iterations=2000, check=check, run=run,
                             fits=lambda spec, real, device: check_matching(spec, real, device, gradients=True),
                             example="IDC matches only convolution gradients, and the one convolutional network "
                                     "small enough for 8x8 digits (conv3) instance-normalises 2x2 maps, where the "
                                     "gradients blow up; tests/test_idc.py checks its steps against IDC's definitions "
                                     "on CIFAR-10, docs/paper_cpu its gain over a random subset there"))
