"""One template per extension point that every registered entry passes
(models: tests/test_models.py; pruning strategies: tests/test_masks.py).
CONTRIBUTING.md names, for each recipe, the test that guards it."""

import dataclasses

import pytest

from raylth.engine.data import DATASETS
from raylth.reporting.sections import SECTIONS
from raylth.specs import DistillSpec, Spec, TrialSpec
from raylth.specs.analysis import TRIAL_BLOCKS
from raylth.specs.distill import DISTILL_METHODS, SYNTHESIS_FIELDS, uses_field
from raylth.stages import METHODS, STAGES
from raylth.stages.analyses import ANALYSES
from raylth.stages.distill import DISTILL_RUNNERS
from raylth.stages.trials import trial_plan


def _spec_classes():
    seen, todo = set(), [Spec]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in seen and dataclasses.is_dataclass(sub):
                seen.add(sub)
            todo.append(sub)
    return seen


def test_kind_strings_are_unique_among_all_specs():
    kinds = {}
    for cls in _spec_classes():
        if cls.__module__.startswith("raylth."):
            assert kinds.setdefault(cls.kind, cls) is cls, f"{cls.kind}: {kinds[cls.kind]} and {cls}"


@pytest.mark.parametrize("kind", sorted(STAGES))
def test_every_stage_declares_consistent_facts(kind):
    stage = STAGES[kind]
    assert stage.spec.kind == kind and callable(stage.run)
    if stage.method_network:  # a method's result network: trained, with a recipe to rebuild it
        assert stage.trains and stage.recipe is not None and stage.loop_points is not None
    if stage.trains:
        assert stage.recipe is not None
    assert stage.method is None or isinstance(stage.method, str) or callable(stage.method)


@pytest.mark.parametrize("name", sorted(DISTILL_METHODS))
def test_every_distillation_method_has_a_runner_and_real_fields(name):
    method = DISTILL_METHODS[name]
    fields = {f.name for f in dataclasses.fields(DistillSpec)}
    assert set(method.fields) <= fields and name in DISTILL_RUNNERS
    if method.synthesizes:
        spec = DistillSpec(method=name)
        assert spec.lr_img_value > 0 and spec.lr_img_value == method.default_lr_img(spec)
        # its own defaults are of fields declared to depend on the method
        assert all(f.metadata.get("resolved") for f in dataclasses.fields(DistillSpec) if f.name in method.defaults)
    else:
        assert not any(uses_field(name, f) for f in SYNTHESIS_FIELDS)


@pytest.mark.parametrize("block", sorted(TRIAL_BLOCKS))
def test_every_analysis_block_has_an_analysis_whose_jobs_are_registered_stages(block):
    assert block in ANALYSES and ANALYSES[block].options is TRIAL_BLOCKS[block]
    trial = TrialSpec.from_dict({"method": "imp", "levels": 1, "data": {"name": "digits"},
                                 "model": {"name": "lenet"}, block: {}})
    assert trial.analysis(block) is not None and block in trial.to_dict(omit_defaults=True)
    planned = trial_plan("t", trial)
    added = [job for job in planned if job.label.endswith(block) or block in job.label]
    assert added, f"{block}: no jobs on a 1-level imp trial"
    for job in planned:
        assert all(spec.kind in STAGES for spec in job.specs)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_plans_registered_stages(name):
    raw = {"method": name, "levels": 2, "data": {"name": "digits"}, "model": {"name": "lenet"}}
    from raylth.specs.distill import TRIAL_METHODS_WITH_DISTILL

    if name in TRIAL_METHODS_WITH_DISTILL:
        raw |= {"distill": {"method": "dm", "model": {"name": "lenet"}}, "start_level": 1,
                "inner": {"lr": 0.01, "duration": "1ep"}}
    for job in trial_plan("t", TrialSpec.from_dict(raw)):
        assert job.specs and all(spec.kind in STAGES for spec in job.specs)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_data_set_refuses_the_keys_it_does_not_read(name, tmp_path):
    """data.path / data.test only where the set declares it reads them: one
    line naming the key, before any file is touched."""
    from raylth.engine.data import load_dataset
    from raylth.engine.data.registry import _TAKES
    from raylth.errors import SpecError
    from raylth.specs import DataSpec

    assert set(_TAKES[name]) <= {"path", "test"}
    for key in {"path", "test"} - set(_TAKES[name]):
        with pytest.raises(SpecError, match=rf"^data\.{key}: only the .* take {key}; remove it for {name}$"):
            load_dataset(DataSpec(name, **{key: "x"}), tmp_path)


def test_every_report_section_takes_an_empty_frame(tmp_path):
    import pandas as pd

    from raylth.reporting.results import COLUMNS
    from raylth.store import Store

    for section in SECTIONS:
        assert section(Store(tmp_path / "store"), pd.DataFrame(columns=COLUMNS), tmp_path) == {}, section
