"""IMP on a real CIFAR-10 subset (rebuilt from ../shared/data), and the CUDA path when there is a GPU."""

import pytest
import torch

from raylth.specs import DataSpec, ImpLevelSpec, ModelSpec, Seeds, Step, TrainSpec
from raylth.stages import StageContext, run_stage
from raylth.store import Store

pytestmark = pytest.mark.usefixtures("fast_path")  # the stage suite, in both modes (conftest)


def level2_spec(width=4):
    return ImpLevelSpec(data=DataSpec("cifar10"), model=ModelSpec("resnet20", width=width),
                        train=TrainSpec(lr=0.05, batch_size=50, duration=Step.parse("2ep")),
                        seeds=Seeds(1, 2, 3), level=2)


def test_imp_on_a_cifar10_subset_with_augmentation(cifar10_subset_root, tmp_path):
    ctx = StageContext(store=Store(tmp_path), data_root=cifar10_subset_root, device=torch.device("cpu"))
    ticket = run_stage(level2_spec(), ctx)
    assert ctx.dataset(level2_spec().data).augment  # CIFAR crops and flips by default
    assert ticket.metrics["sparsity"] == pytest.approx(0.36, abs=1e-3)
    assert 0.0 <= ticket.metrics["test_acc"] <= 1.0
    assert ticket.metrics["steps"] == 2 * 200 // 50
    mask = ticket.mask()
    final = ticket.weights("final")
    assert all(bool((final[name][~keep] == 0).all()) for name, keep in mask.items())
    # the same spec in a fresh store gives bitwise the same network
    again = run_stage(level2_spec(), StageContext(store=Store(tmp_path / "again"),
                                                  data_root=cifar10_subset_root, device=torch.device("cpu")))
    assert all(torch.equal(final[k], v) for k, v in again.weights("final").items())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_path_trains_in_bf16_channels_last(cifar10_subset_root, tmp_path):
    ctx = StageContext(store=Store(tmp_path), data_root=cifar10_subset_root, device=torch.device("cuda"))
    ticket = run_stage(level2_spec(width=8), ctx)
    assert ticket.metrics["device"].startswith("cuda")
    assert 0.0 <= ticket.metrics["test_acc"] <= 1.0
    final = ticket.weights("final")
    assert all(torch.isfinite(v.float()).all() for v in final.values())
    assert all(bool((final[name][~keep] == 0).all()) for name, keep in ticket.mask().items())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (compiling on CPU takes about a minute)")
def test_compiled_training_follows_eager_training(cifar10_subset_root, tmp_path):
    def final(compile_steps, store):
        ctx = StageContext(store=Store(store), data_root=cifar10_subset_root, device=torch.device("cuda"),
                           compile=compile_steps)
        return run_stage(level2_spec(width=8), ctx).metrics["history"]

    eager, compiled = final(False, tmp_path / "eager"), final(True, tmp_path / "compiled")
    assert [h["step"] for h in eager] == [h["step"] for h in compiled]
    assert compiled[-1]["test_loss"] == pytest.approx(eager[-1]["test_loss"], rel=0.05)
