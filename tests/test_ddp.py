"""Data parallelism is exact: 2 gloo workers on CPU follow the 1-worker run
with the same global batch and seeds (LeNet: no BatchNorm, whose per-shard
statistics only SyncBatchNorm on CUDA makes global)."""


import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from raylth.engine.data import epoch_batches, load_dataset
from raylth.engine.distributed import Dist
from raylth.engine.masks import full_mask, prune
from raylth.engine.models import build_model
from raylth.engine.train import Trainer
from raylth.specs import DataSpec, ModelSpec, Seeds, Step, TrainSpec

SPEC = TrainSpec(lr=0.05, batch_size=64, duration=Step.parse("3ep"), eval_every=Step.parse("10it"))


def _train(rank: int, world: int, rendezvous: str, out: str) -> None:
    if world > 1:  # a file both ranks open: no port to choose, so none to race for
        dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    data = load_dataset(DataSpec("digits"))
    model = build_model(ModelSpec("lenet"), data.input_shape, data.num_classes, seed=0)
    mask = prune("global_magnitude", dict(model.named_parameters()), full_mask(model), 0.5)
    trainer = Trainer(model, data, SPEC, Seeds(1, 2, 3), augment=True, mask=mask,
                      device=torch.device("cpu"), dist=Dist.current())
    history = trainer.run()
    if rank == 0:
        torch.save({"history": history, "weights": trainer.weights()}, out)
    if world > 1:
        dist.destroy_process_group()


def test_shards_partition_the_global_batch(digits_data):
    seeds = Seeds(1, 2, 3)
    whole = list(epoch_batches(digits_data, 64, 0, seeds, augment=True))
    halves = [list(epoch_batches(digits_data, 64, 0, seeds, augment=True, rank=r, world=2)) for r in (0, 1)]
    for (x, y), (x0, y0), (x1, y1) in zip(whole, *halves):
        assert torch.equal(x[0::2], x0) and torch.equal(x[1::2], x1)
        assert torch.equal(y[0::2], y0) and torch.equal(y[1::2], y1)


def test_two_gloo_workers_follow_one_worker(tmp_path):
    _train(0, 1, "", str(tmp_path / "one.pt"))
    mp.spawn(_train, args=(2, str(tmp_path / "rendezvous"), str(tmp_path / "two.pt")), nprocs=2)
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert len(one["history"]) == len(two["history"]) > 3
    for a, b in zip(one["history"], two["history"]):
        assert a["step"] == b["step"]
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
        assert b["test_loss"] == pytest.approx(a["test_loss"], rel=1e-4)
    for name, value in one["weights"].items():
        torch.testing.assert_close(two["weights"][name], value, rtol=1e-4, atol=1e-5)
    # the mask held on every rank: pruned weights are exactly zero in the DDP run too
    assert int((two["weights"]["1.weight"] == 0).sum()) >= int((one["weights"]["1.weight"] == 0).sum()) > 0


def test_batch_must_split_over_workers():
    data = load_dataset(DataSpec("digits"))
    model = build_model(ModelSpec("lenet"), data.input_shape, data.num_classes, seed=0)
    with pytest.raises(ValueError, match="train.batch_size: 64 does not split evenly over 3 workers"):
        Trainer(model, data, SPEC, Seeds(), augment=False, device=torch.device("cpu"), dist=Dist(0, 3))


def test_a_partial_batch_must_split_over_workers_too():
    data = load_dataset(DataSpec("digits", train_size=1000))  # 15 batches of 64 and one of 40
    model = build_model(ModelSpec("lenet"), data.input_shape, data.num_classes, seed=0)
    with pytest.raises(ValueError, match="train.last_batch: the last batch of each epoch holds 40 of the 1000"):
        Trainer(model, data, SPEC.replace(batch_size=96), Seeds(), device=torch.device("cpu"), dist=Dist(0, 3))
