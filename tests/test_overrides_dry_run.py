"""Command-line overrides (KEY=VALUE, checked like the file's keys) and the
dry run (jobs by stage, what is stored, resources, estimated cost; Ray not
started, nothing written)."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import raylth
import raylth.engine.data
import raylth.specs
from raylth.cli.main import main
from raylth.errors import RaylthError
from raylth.sweep.files import read_yaml
from raylth.sweep.overrides import apply_override

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "sweeps" / "quickstart.yaml"
RAW = read_yaml(QUICKSTART)


@pytest.mark.parametrize("override, path, value", [
    ("train.lr=0.1", ("base", "train", "lr"), 0.1),
    ("base.train.lr=0.1", ("base", "train", "lr"), 0.1),
    ("grid.seed=[0,1,2]", ("grid", "seed"), [0, 1, 2]),
    ("seed=[5]", ("grid", "seed"), [5]),          # the grid varies it: a list replaces the axis
    ("resources.gpu=0.5", ("resources", "gpu"), 0.5),
    ("prune.rewind=100it", ("base", "prune", "rewind"), "100it"),
    ("model.width=null", ("base", "model", "width"), None),
])
def test_an_override_sets_one_value(override, path, value):
    out = apply_override(RAW, override)
    node = out
    for part in path:
        node = node[part]
    assert node == value
    assert RAW == read_yaml(QUICKSTART)  # the file's contents are not changed


@pytest.mark.parametrize("override", ["prune.rewind", "rewind"])
def test_a_shorthand_and_its_field_are_one_key(override):
    raw = {**RAW, "grid": {**RAW["grid"], "rewind": ["0it", "10it"]}}
    assert apply_override(raw, f"{override}=[5it]")["grid"]["rewind"] == ["5it"]
    fixed = apply_override(raw, f"{override}=5it")
    assert "rewind" not in fixed["grid"] and fixed["base"]["prune"]["rewind"] == "5it"
    sweep = raylth.api._as_sweep(raw, [f"{override}=5it"])
    assert {t.spec.prune.rewind.iterations(1) for t in sweep.trials} == {5}


def test_one_value_for_a_grid_axis_fixes_it():
    out = apply_override(RAW, "seed=3")
    assert "seed" not in out["grid"] and out["base"]["seed"] == 3
    sweep = raylth.api._as_sweep(QUICKSTART, ["seed=3"])
    assert len(sweep.trials) == 3 and {t.spec.seeds.init for t in sweep.trials} == {3}


@pytest.mark.parametrize("override, needle", [
    ("trian.lr=0.1", "override 'trian.lr=0.1': unknown key 'trian' (did you mean 'train'?)"),
    ("gird.seed=[1]", "(did you mean 'grid'?)"),
    ("train.lrr=0.1", "override 'train.lrr=0.1': train.lrr: unknown key (did you mean 'lr'?)"),
    ("train.lr=.nan", "train.lr: nan is not a finite number"),
    ("train.lr", "expected KEY=VALUE"),
    ("train.lr=[1", "the value is not valid YAML"),
    ("train.lr.x=1", "train.lr is 0.05, not a mapping"),
    ("grid.seed=[]", "grid.seed: expected a non-empty list"),
])
def test_a_bad_override_is_one_line_naming_it(override, needle, tmp_path, capsys):
    assert main(["run", str(QUICKSTART), override, "--dry-run", "--storage", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "s").exists()


def test_the_dry_run_counts_jobs_and_prices_them_without_ray_or_writes(tmp_path):
    code = ("import sys; from raylth.cli.main import main; rc = main(sys.argv[1:]); "
            "assert 'ray' not in sys.modules, 'Ray was imported'; sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code, "run", str(QUICKSTART), "train.lr=0.1", "grid.seed=[0,1,2]",
                           "--dry-run", "--storage", str(tmp_path / "s"), "--devices", "4"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "quickstart: 9 trials, 9 jobs (0 stored, 9 to run), 87 artifacts (0 stored)" in out
    assert "  imp                   42       0          42" in out and "  train                  3" in out
    assert "resources per job: 1 worker(s) x {cpu: 1, gpu: 0}" in out
    assert "CPU-hours on this machine's CPU" in out and "on 4 CPU(s) (4 jobs at once" in out
    assert not (tmp_path / "s").exists()


def test_overrides_may_follow_the_options(tmp_path, capsys):
    assert main(["run", str(QUICKSTART), "--dry-run", "grid.seed=[0]", "--storage", str(tmp_path), "train.lr=0.1"]) == 0
    assert "quickstart: 3 trials" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["run", str(QUICKSTART), "--dry-run", "--bogus"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_a_gpu_sweep_is_priced_on_a_device_kind(tmp_path, capsys):
    args = ["run", str(QUICKSTART), "resources.gpu=1", "--dry-run", "--storage", str(tmp_path / "s")]
    assert main(args + ["--device-kind", "nvidia-h100"]) == 0
    out = capsys.readouterr().out
    assert "GPU-hours on nvidia-h100" in out and "nominal bf16 peak of nvidia-h100 x 0.3" in out
    assert main(args + ["--device-kind", "nvidia-h10"]) == 2
    assert "unknown device kind 'nvidia-h10' (did you mean 'nvidia-h100'?)" in capsys.readouterr().err


def test_the_training_flops_follow_the_duration_and_the_trials(tmp_path):
    def flops(*overrides):
        return sum(p.flops for p in raylth.run(QUICKSTART, storage=tmp_path, overrides=list(overrides),
                                               dry_run=True).jobs)
    assert flops("train.duration=20ep") == pytest.approx(2 * flops("train.duration=10ep"))
    assert flops("grid.seed=[0,1,2]") == pytest.approx(1.5 * flops())
    # LeNet-300-100 on 8x8 digits: 64*300 + 300*100 + 100*10 multiply-adds per image
    per_image = 2 * (64 * 300 + 300 * 100 + 100 * 10)
    dense = next(p for p in raylth.run(QUICKSTART, storage=tmp_path, dry_run=True).jobs
                 if p.job.label == "seed=0,method=dense")
    train_images = raylth.engine.data.load_dataset(raylth.specs.DataSpec("digits")).train_y.numel()
    assert dense.flops == pytest.approx(3 * per_image * 20 * train_images, rel=1e-3)


@pytest.mark.slow
def test_a_dry_run_of_a_stored_sweep_has_nothing_to_run(quickstart_store):
    before = {p: p.stat().st_mtime_ns for p in quickstart_store.rglob("*")}
    plan = raylth.run(QUICKSTART, storage=quickstart_store, dry_run=True)
    lines = "\n".join(plan.lines())
    assert "6 jobs (6 stored, 0 to run), 58 artifacts (58 stored)" in lines
    assert sum(p.seconds for p in plan.jobs) == 0
    assert {p: p.stat().st_mtime_ns for p in quickstart_store.rglob("*")} == before


def test_overrides_from_python_match_an_edited_file(tmp_path):
    edited = yaml.safe_load(QUICKSTART.read_text())
    edited["base"]["train"]["lr"] = 0.1
    edited["grid"]["seed"] = [4]
    direct = raylth.api._as_sweep(edited)
    overridden = raylth.api._as_sweep(QUICKSTART, ["train.lr=0.1", "seed=[4]"])
    assert [t.spec.id for t in direct.trials] == [t.spec.id for t in overridden.trials]
    with pytest.raises(RaylthError, match="not to a parsed Sweep"):
        raylth.api._as_sweep(direct, ["train.lr=0.2"])
