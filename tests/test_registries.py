"""One template per extension point that every registered entry passes, with
no entry named here: a new one is tested by being registered, and fails when
it lacks a declaration its kind requires (models: tests/test_models.py;
pruning strategies: tests/test_masks.py). CONTRIBUTING.md names, for each
recipe, the test that guards it."""

import dataclasses

import pytest

from raylth.engine.data import DATASETS
from raylth.reporting.sections import SECTIONS
from raylth.specs import DistillSpec, Spec, TrialSpec
from raylth.specs.blocks import TRIAL_BLOCKS
from raylth.errors import SpecError
from raylth.specs.distill import DISTILL_METHODS, SYNTHESIS_FIELDS, uses_field
from raylth.stages import METHODS, STAGES
from raylth.stages.analyses import ANALYSES
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


def _plugin_of(obj) -> str:
    """The plugin folder (raylth.plugins.<kind>.<name>) an object is declared in."""
    parts = obj.__module__.split(".")
    assert parts[:2] == ["raylth", "plugins"], f"{obj} is not declared in a plugin"
    return ".".join(parts[:4])


# What every plugin of a kind declares (composer's settings table): a missing one fails its template.
@pytest.mark.parametrize("name", sorted(DISTILL_METHODS))
def test_every_distillation_method_declares_its_fields_runner_and_defaults(name):
    method = DISTILL_METHODS[name]
    assert callable(method.run) and issubclass(method.options, Spec)
    assert method.options.label() == "distill"  # its fields are written in the distill: block
    given = {"method": name, **({"path": "set.pt"} if method.inputs else {})}
    spec = DistillSpec(**given)
    assert spec.to_dict(omit_defaults=True) == {k: v for k, v in given.items() if (k, v) != ("method", "dm")}
    assert DistillSpec.from_dict(spec.to_dict()) == spec == DistillSpec.from_stored(spec.to_dict())
    if method.synthesizes:  # its digits example, or why there is none (tests/test_distill_stages.py)
        assert isinstance(method.example, dict) or (isinstance(method.example, str) and method.example), \
            f"{name}: declares no example"
        assert spec.lr_img_value > 0 and spec.lr_img_value == method.default_lr_img(spec)
    else:
        assert not any(uses_field(name, f) for f in SYNTHESIS_FIELDS)
    others = {f for m in DISTILL_METHODS.values() for f in m.field_names} - set(method.field_names)
    for other in sorted(others)[:1]:  # another method's field means nothing here: one id
        assert DistillSpec(**given, **{other: 1}).id == spec.id
    with pytest.raises(SpecError, match=r"^distill\.colour: not a field of any distillation method"):
        DistillSpec(method=name, colour=1)


@pytest.mark.parametrize("block", sorted(ANALYSES))
def test_every_analysis_declares_its_block_jobs_columns_and_report_section(block):
    analysis = ANALYSES[block]
    assert TRIAL_BLOCKS[block] is analysis.options and callable(analysis.jobs)
    folder = _plugin_of(analysis.options)
    assert _plugin_of(analysis.jobs) == folder
    assert any(_plugin_of(section) == folder for section in SECTIONS if section.__module__.startswith(folder)), \
        f"{block}: no report section in {folder}"
    trial = TrialSpec.from_dict({"method": "imp", "levels": 1, "data": {"name": "digits"},
                                 "model": {"name": "lenet"}, block: {}})
    assert trial.analysis(block) is not None and block in trial.to_dict(omit_defaults=True)
    planned = trial_plan("t", trial)
    added = [job for job in planned if block in job.label]
    assert added, f"{block}: no jobs on a 1-level imp trial"
    for job in planned:
        assert all(spec.kind in STAGES for spec in job.specs)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_declares_an_example_that_plans_registered_stages(name):
    method = METHODS[name]
    assert method.example is not None, f"{name}: declares no example trial"
    raw = {"method": name, "data": {"name": "digits"}, "model": {"name": "lenet", "width": 16}} | method.example
    trial = TrialSpec.from_dict(raw)
    networks = method.artifacts(trial)
    assert networks and all(spec.kind in STAGES for spec in networks)
    for job in trial_plan("t", trial):
        assert job.specs and all(spec.kind in STAGES for spec in job.specs)
    if method.pruning:  # its networks are points of the pruning comparison
        assert all(STAGES[spec.kind].method_network for spec in networks)
    if method.check is not None:  # what it reads beyond the trial's groups: missing, one line
        bare = {k: v for k, v in raw.items() if k in ("method", "data", "model", "levels")}
        if bare != raw:
            with pytest.raises(SpecError) as err:
                TrialSpec.from_dict(bare)
            assert "\n" not in str(err.value)


def _compared_strings(tree) -> set[str]:
    """The string constants a module compares something with (==, !=, in, not in)."""
    import ast

    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for side in [node.left, *node.comparators]:
                items = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
                found |= {item.value for item in items if isinstance(item, ast.Constant) and isinstance(item.value, str)}
    return found


def test_the_core_compares_no_plugin_name():
    """Method names and the stage kinds of plugins are compared only in their own folder."""
    import ast
    import pathlib

    import raylth

    root = pathlib.Path(raylth.__file__).parent
    core_kinds = {k for k, stage in STAGES.items() if not stage.spec.__module__.startswith("raylth.plugins")}
    names = (set(METHODS) | set(STAGES)) - core_kinds  # "distill" is also the core's stage kind
    for path in root.rglob("*.py"):
        if "plugins" in path.parts:
            continue
        named = _compared_strings(ast.parse(path.read_text())) & names
        assert not named, f"{path.relative_to(root)} compares with {sorted(named)}"


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

    from raylth.reporting.results import columns
    from raylth.store import Store

    for section in SECTIONS:
        assert section(Store(tmp_path / "store"), pd.DataFrame(columns=columns()), tmp_path) == {}, section
