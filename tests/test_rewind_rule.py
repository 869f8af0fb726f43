"""One rule for what every rewinding method does with the tensors it does not
prune (biases, BatchNorm parameters and running statistics): the trunk's
``prune.rewind_bn``. Each method's stored starting state is read back and
compared with where the rule says it comes from."""

import pytest
import torch

from raylth.engine.masks import prunable_names
from raylth.engine.models import build_model
from raylth.specs import DataSpec, DistillSpec, ImpLevelSpec, ModelSpec, PruneSpec, Seeds, Step, TrainSpec
from raylth.plugins.methods.controls import BranchSpec
from raylth.plugins.methods.distilled import MaskImpSpec, TicketSpec
from raylth.stages import StageContext, run_stage
from raylth.specs.refs import checkpoint_name
from raylth.store import Store

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = DataSpec("digits")
MODEL = ModelSpec("resnet20", width=4)  # BatchNorm everywhere and a classifier bias
TRAIN = TrainSpec(lr=0.05, batch_size=128, duration=Step(2, "ep"))
REWIND = Step(3, "it")


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return StageContext(store=Store(tmp_path_factory.mktemp("rewind_rule")), device=torch.device("cpu"))


def trunk(rewind_bn: bool, level: int = 2, rewind: Step = REWIND, data=DATA, train=TRAIN) -> ImpLevelSpec:
    return ImpLevelSpec(data=data, model=MODEL, train=train, seeds=Seeds.all(0), level=level,
                        prune=PruneSpec(fraction=0.5, rewind=rewind, rewind_bn=rewind_bn))


def unpruned(weights: dict, model=MODEL) -> list[str]:
    """The tensors the rule is about: every one but the prunable weights."""
    net = build_model(model, (1, 8, 8), 10, seed=0)
    return [k for k in weights if k not in set(prunable_names(net))]


def assert_from(state: dict, source: dict, names: list[str]) -> None:
    for name in names:
        assert torch.equal(state[name], source[name]), name


def assert_not_from(state: dict, source: dict, names: list[str]) -> None:
    assert any(not torch.equal(state[n], source[n]) for n in names if state[n].is_floating_point())


def kept_weights(state: dict, rewind: dict, mask: dict) -> None:
    for name, m in mask.items():
        assert torch.equal(state[name], rewind[name] * m), name


@pytest.mark.parametrize("rewind_bn", [False, True], ids=["kept", "rewound"])
def test_imp_level_and_controls_start_by_the_one_rule(ctx, rewind_bn):
    level = trunk(rewind_bn)
    imp = run_stage(level, ctx)
    previous = run_stage(level.at_level(1), ctx).weights("final")
    rewind = run_stage(level.trunk_root(), ctx).weights(checkpoint_name(REWIND))
    names = unpruned(previous)
    expected = rewind if rewind_bn else previous
    other = previous if rewind_bn else rewind

    start = imp.weights(checkpoint_name(REWIND))
    assert_from(start, expected, names)
    assert_not_from(start, other, names)
    kept_weights(start, rewind, imp.mask())

    random = run_stage(BranchSpec(trunk=level, method="random_prune", seed=1), ctx)
    start = random.weights(checkpoint_name(REWIND))
    assert_from(start, expected, names)
    kept_weights(start, rewind, random.mask())
    assert any(not torch.equal(random.mask()[n], m) for n, m in imp.mask().items())
    assert all(int(random.mask()[n].sum()) == int(m.sum()) for n, m in imp.mask().items())

    reinit = run_stage(BranchSpec(trunk=level, method="reinit", seed=1), ctx)
    start = reinit.weights("init")
    if rewind_bn:  # everything from the fresh draw: not the trunk's init, not its trained level
        assert_not_from(start, previous, names)
        assert not torch.equal(start["fc.bias"], rewind["fc.bias"])
    else:
        assert_from(start, previous, names)
    for name, m in reinit.mask().items():
        assert bool((start[name][~m] == 0).all()) and not torch.equal(start[name], rewind[name] * m), name


@pytest.fixture(scope="module")
def distilled(ctx):
    """A tiny distilled set of digits (DM) and the trial parts a ticket needs."""
    distill = DistillSpec(data=DATA, method="dm", ipc=2, iterations=2, model=ModelSpec("lenet", 16))
    run_stage(distill, ctx)
    return distill.dataset()


@pytest.mark.parametrize("rewind_bn", [False, True], ids=["kept", "rewound"])
def test_tickets_and_mask_then_imp_start_by_the_one_rule(ctx, distilled, rewind_bn):
    inner = TrainSpec(lr=0.05, batch_size=10, duration=Step(3, "ep"))
    level = trunk(rewind_bn, level=2, rewind=Step(0, "it"), data=distilled, train=inner)
    ticket_spec = TicketSpec(trunk=level, data=DATA, train=TRAIN, seeds=Seeds.all(0))
    ticket = run_stage(ticket_spec, ctx)
    previous = run_stage(level.at_level(1), ctx).weights("final")  # trained on the distilled set
    init = run_stage(level.trunk_root(), ctx).weights("init")
    names = unpruned(previous)
    start = ticket.weights("init")
    assert_from(start, init if rewind_bn else previous, names)
    assert_not_from(start, previous if rewind_bn else init, names)
    kept_weights(start, init, ticket.mask())
    # the distilled level's own start is the ticket's start: only the data it then trains on differs
    assert_from(start, run_stage(level, ctx).weights("init"), list(start))

    # distilled_random: the same start, a random mask with the ticket's per-layer counts
    random = run_stage(ticket_spec.replace(mask="random", seed=1), ctx)
    assert_from(random.weights("init"), start, names)
    kept_weights(random.weights("init"), init, random.mask())
    assert any(not torch.equal(random.mask()[n], m) for n, m in ticket.mask().items())
    assert all(int(random.mask()[n].sum()) == int(m.sum()) for n, m in ticket.mask().items())

    maskimp = run_stage(MaskImpSpec(start=ticket_spec, prune=level.prune, level=3), ctx)
    begin = maskimp.weights("init")
    assert_from(begin, start if rewind_bn else ticket.weights("final"), names)
    kept_weights(begin, start, maskimp.mask())


def test_ids_stored_before_the_rule_keep_their_meaning():
    """rewind_bn: true computed the same before and after (one id, the old one);
    a stored spec without the field is the old full rewind."""
    for rewind_bn in (True, False):
        level = trunk(rewind_bn)
        old = BranchSpec(trunk=level, rewind_rule="full")
        assert "rewind_rule" not in old.canonical()
        assert BranchSpec(trunk=level).rewind_rule == ("full" if rewind_bn else "prune")
        stored = BranchSpec.from_stored({k: v for k, v in BranchSpec(trunk=level).to_dict().items()
                                         if k != "rewind_rule"})
        assert stored.rewind_rule == "full" and stored.id == old.id
    assert TicketSpec(trunk=trunk(True)).id == TicketSpec(trunk=trunk(True), rewind_rule="full").id
    assert TicketSpec(trunk=trunk(False)).id != TicketSpec(trunk=trunk(False), rewind_rule="full").id
