"""Issue #4: a distilled set evaluated with raylth's standard protocol
(DistillEvalSpec) lands within 3 points of an independent implementation of
the same protocol (tests/reference_protocol.py: written from the DC/DSA/DM/MTT
papers and code conventions, sharing no code with raylth's engine).

Data and settings as in test_distill_cifar.py: a CIFAR-10 subset of 100
images per class per split rebuilt from ../shared/data (skipped without it),
ConvNet-3 width 32, ipc 1; the evaluation there (300 epochs, lr 0.01, batch
256, DSA, seeds 0, 1, 2). Two sets, both read back from their stored
``distilled.pt`` and given to both implementations as they are: the DM set
of test_distill_cifar.py and the same DM spec at iterations 0 (its real-image
initialisation: a random real subset, the low-accuracy end).

Measured (2 CPU cores, one thread; about 50 s for the file), raylth vs reference:
  DM        0.245 [0.225, 0.266, 0.245]  vs 0.253 [0.245, 0.271, 0.243]  (-0.8 points)
  DM init   0.130 [0.129, 0.132, 0.129]  vs 0.129 [0.120, 0.126, 0.141]  (+0.1 points)
Spread of the reference on the DM set: seeds 3-5 give 0.229, and the DC code's
literal schedule (301 epochs, momentum reset at the decay) 0.252 on seeds 0-2.
"""

import sys
from pathlib import Path

import pytest
import torch

from raylth.specs import DataSpec, DistillEvalSpec, DistillSpec, ModelSpec
from raylth.stages import run_stage

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_protocol as ref

pytestmark = pytest.mark.usefixtures("one_thread")

CIFAR = DataSpec("cifar10")
WIDTH = 32
EVAL = DistillEvalSpec(model=ModelSpec("conv3", width=WIDTH), epochs=300, lr=0.01, batch_size=256,
                       seeds=(0, 1, 2))
DM = DistillSpec(data=CIFAR, ipc=1, model=ModelSpec("conv3", width=WIDTH), method="dm", iterations=50,
                 lr_img=5.0, batch_real=32)   # test_distill_cifar.py's METHOD_SPECS["dm"]
SETS = {"dm": DM, "dm_init": DM.replace(iterations=0)}
TOLERANCE = 0.03  # issue #4: within 3 points


@pytest.fixture(scope="module")
def ctx(cifar10_distill_ctx):
    """The store test_distill_cifar.py uses too: its DM set and evaluation are reused."""
    return cifar10_distill_ctx


@pytest.mark.parametrize("name", sorted(SETS))
def test_raylth_evaluation_matches_an_independent_implementation(name, ctx):
    spec = SETS[name]
    m = run_stage(EVAL.of(spec), ctx).metrics                # distils (once), then evaluates
    record = ctx.store.get(spec.id).load("distilled.pt")
    images, labels = record["images"].float(), record["labels"].long()
    assert images.shape == (10, 3, 32, 32) and float(record["mean"].abs().max()) == 0.0
    assert float((record["std"] - 1).abs().max()) == 0.0 and "zca_matrix" not in record
    real = ctx.dataset(CIFAR)
    assert real.test_x.dtype == torch.uint8  # so source_mean/std are in 0..255 units
    test_x = ref.normalise(real.test_x.cpu(), record["source_mean"], record["source_std"])
    accs = ref.evaluate(images, labels, test_x, real.test_y.cpu(), width=WIDTH, epochs=EVAL.epochs,
                        lr=EVAL.lr, batch=EVAL.batch_size, seeds=EVAL.seeds)
    mean_ref = sum(accs) / len(accs)
    note = (f"{name}: raylth {m['test_acc']:.4f} {[round(a, 4) for a in m['accs']]} vs reference "
            f"{mean_ref:.4f} {[round(a, 4) for a in accs]}; difference {m['test_acc'] - mean_ref:+.4f}, "
            f"tolerance {TOLERANCE}")
    print(note)
    assert abs(m["test_acc"] - mean_ref) <= TOLERANCE, note
