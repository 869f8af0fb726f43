"""Memory known before it runs out: the estimates against what autograd really
keeps, the automatic low_memory, and the one-line refusal before anything is
stored (CPU; the worker's memory stated with RAYLTH_DEVICE_MEMORY_GIB)."""

import pytest
import torch
import yaml

from raylth.cli.main import main
from raylth.engine.distill import distill_mtt
from raylth.engine.memory import GiB, mtt_unroll_estimate, saved_bytes, training_estimate
from raylth.engine.models import build_model
from raylth.errors import WontFitError
from raylth.specs import DataSpec, DistillSpec, ModelSpec, TrainSpec
from raylth.plugins.distillers.mtt.experts import ExpertOptions
from raylth.stages import StageContext, run_stage
from raylth.plugins.distillers.mtt.memory import mtt_low_memory
from raylth.stages.memory import check_matching, check_training
from raylth.store import Store

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE, CLASSES = (3, 16, 16), 10
CONV = ModelSpec("conv3", width=16)


def conv(seed=0):
    return build_model(CONV, SHAPE, CLASSES, seed=seed)


def _experts(model, epochs=3):
    start = torch.cat([p.detach().flatten() for p in model.parameters()])
    return [[start + 1e-3 * k for k in range(epochs + 1)]]


@pytest.mark.parametrize("low_memory", [False, True])
def test_mtt_estimate_matches_what_autograd_keeps(low_memory):
    """The estimate's kept part equals the bytes autograd saves during one real
    MTT iteration (syn_steps 6, batch 20) to within 10%. With low_memory the
    hooks see only each step's checkpointed inputs: the one step recomputed at
    a time during the backward pass is transient, and left out here."""
    g = torch.Generator().manual_seed(0)
    real_x, real_y = torch.randn(200, *SHAPE, generator=g), torch.arange(200) % CLASSES
    steps, ipc = 6, 2
    measured = saved_bytes(lambda: distill_mtt(
        real_x, real_y, CLASSES, _experts(conv()), conv, ipc=ipc, iterations=1, syn_steps=steps,
        expert_epochs=1, max_start_epoch=1, dsa=False, low_memory=low_memory,
        generator=torch.Generator().manual_seed(0)))
    estimate = mtt_unroll_estimate(conv(), SHAPE, ipc * CLASSES, steps, ipc * CLASSES, CLASSES, low_memory)
    vector = sum(p.numel() for p in conv().parameters()) * 4
    resident = 4 * vector + 3 * ipc * CLASSES * 4 * 16 * 16 * 3
    transient = 0.0
    if low_memory:  # one plain step, without its parameter vector
        transient = mtt_unroll_estimate(conv(), SHAPE, ipc * CLASSES, 1, ipc * CLASSES, CLASSES,
                                        False).device - resident - vector
    assert estimate.device - resident - transient == pytest.approx(measured, rel=0.10)


def test_training_estimate_grows_with_the_batch_and_counts_the_data():
    small = training_estimate(conv(), SHAPE, 8, CLASSES, data_bytes=0)
    large = training_estimate(conv(), SHAPE, 64, CLASSES, data_bytes=0)
    with_data = training_estimate(conv(), SHAPE, 8, CLASSES, data_bytes=GiB)
    assert large.device > small.device and with_data.device == pytest.approx(small.device + GiB)


def _mtt(**kw):
    return DistillSpec(data=DataSpec("digits"), method="mtt", model=ModelSpec("lenet"), ipc=2, iterations=1,
                       syn_steps=20, expert_epochs=1, max_start_epoch=1, experts=ExpertOptions(n=1, epochs=2),
                       **kw)


def test_mtt_takes_low_memory_only_where_it_makes_the_difference(digits_data):
    spec, cpu = _mtt(), torch.device("cpu")
    net = build_model(spec.model, digits_data.input_shape, 10, seed=0)
    plain = mtt_unroll_estimate(net, digits_data.input_shape, 20, 20, 20, 10, False).device
    low = mtt_unroll_estimate(net, digits_data.input_shape, 20, 20, 20, 10, True).device
    assert low < plain / 2
    assert mtt_low_memory(spec, digits_data, cpu, have=2 * plain) is False
    assert mtt_low_memory(spec, digits_data, cpu, have=(low + plain) / 2) is True
    assert mtt_low_memory(spec.replace(low_memory=True), digits_data, cpu, have=2 * plain) is True
    with pytest.raises(WontFitError) as err:
        mtt_low_memory(spec, digits_data, cpu, have=low / 2)
    line = str(err.value)
    assert "\n" not in line and line.startswith("mtt: syn_steps 20 with lenet: needs ~") and "syn_steps <= " in line
    with pytest.raises(WontFitError, match=r"^mtt experts: .*experts.n \(1\)"):
        mtt_low_memory(spec, digits_data, cpu, host=100.0)


def test_auto_low_memory_is_recorded_and_keeps_the_id(tmp_path, monkeypatch, digits_data):
    spec = _mtt()
    net = build_model(spec.model, digits_data.input_shape, 10, seed=0)
    plain = mtt_unroll_estimate(net, digits_data.input_shape, 20, 20, 20, 10, False).device
    monkeypatch.setenv("RAYLTH_DEVICE_MEMORY_GIB", str(0.9 * plain / GiB))
    art = run_stage(spec, StageContext(store=Store(tmp_path), device=torch.device("cpu")))
    assert art.id == spec.id and art.metrics["low_memory_auto"] is True


def test_a_trainer_that_cannot_fit_is_refused_before_it_starts(digits_data):
    net = build_model(ModelSpec("lenet"), digits_data.input_shape, 10, seed=0)
    with pytest.raises(WontFitError, match=r"^imp: needs ~.* of memory, the worker has 0.0 GiB: lower train.batch_size"):
        check_training("imp", net, TrainSpec(batch_size=64), digits_data, torch.device("cpu"), have=1000.0)


def test_a_sweep_whose_mtt_cannot_fit_stops_with_one_line_and_stores_nothing(tmp_path, monkeypatch, capsys):
    sweep = {"name": "too_big", "resources": {"cpu": 1, "gpu": 1},
             "grid": {"method": ["distill"], "seed": [0]},
             "base": {"data": {"name": "digits"}, "model": {"name": "lenet"},
                      "distill": {"method": "mtt", "ipc": 10, "syn_steps": 200, "iterations": 1,
                                  "expert_epochs": 1, "max_start_epoch": 1, "model": {"name": "lenet"}}}}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    monkeypatch.setenv("RAYLTH_DEVICE_MEMORY_GIB", "0.001")
    store = tmp_path / "store"
    assert main(["run", str(path), "--storage", str(store)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mtt: syn_steps 200 with lenet: needs ~" in err[0] and "GPU memory" in err[0]
    assert not store.exists() or not any(store.rglob("*"))


@pytest.mark.parametrize("method", ["dm", "gm"])
def test_a_matching_distillation_that_cannot_fit_is_refused(method, digits_data):
    spec = DistillSpec(data=DataSpec("digits"), method=method, model=ModelSpec("lenet"), ipc=10)
    gradients = method == "gm"
    check_matching(spec, digits_data, torch.device("cpu"), have=GiB, gradients=gradients)
    with pytest.raises(WontFitError, match=rf"^{method}: ipc 10 with lenet: needs ~.*lower batch_real"):
        check_matching(spec, digits_data, torch.device("cpu"), have=1000.0, gradients=gradients)
