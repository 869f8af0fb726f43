"""Sweeps through Ray Tune on CPU, from the CLI and from Python.

The quickstart runs once, uninterrupted (conftest's quickstart_store; its
results are checked against the science it should show); interrupted,
killed and concurrent runs of it are in test_faults_interrupt.py.
"""

from pathlib import Path

import pytest
import yaml

import raylth

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "sweeps" / "quickstart.yaml"
pytestmark = pytest.mark.slow


def test_quickstart_finds_tickets_and_beats_random_pruning(quickstart_store):
    frame = raylth.results(quickstart_store)
    assert set(frame["method"]) == {"dense", "imp", "random_prune"}
    assert set(frame["seed"]) == {0, 1}
    dense = frame[frame.method == "dense"].test_acc.mean()
    sparse_level = frame[(frame.method == "imp") & (frame.sparsity >= 0.93)].level.max()
    at = frame[frame.level == sparse_level]
    imp = at[at.method == "imp"]
    rand = at[at.method == "random_prune"]
    assert len(imp) == 2 and len(rand) == 2 and (imp.sparsity >= 0.93).all()
    assert (rand.sparsity.values == pytest.approx(imp.sparsity.values))
    assert abs(imp.test_acc.mean() - dense) <= 0.015, (imp.test_acc.mean(), dense)
    assert rand.test_acc.mean() <= imp.test_acc.mean() - 0.05


def test_cli_status_results_report(quickstart_store, tmp_path, cli):
    status = cli("status", quickstart_store)
    assert status.returncode == 0
    assert "quickstart" in status.stdout and " 6 " in status.stdout
    csv = cli("results", quickstart_store, "--format", "csv")
    assert csv.returncode == 0
    header = csv.stdout.splitlines()[0].split(",")
    for column in ("sweep", "stage", "method", "dataset", "model", "seed", "level", "sparsity",
                   "test_acc", "id"):
        assert column in header
    assert len(csv.stdout.splitlines()) == 1 + 2 * (1 + 15 + 14)
    report = cli("report", quickstart_store, "--out", tmp_path / "report")
    assert report.returncode == 0, report.stderr
    table = (tmp_path / "report" / "summary.md").read_text()
    assert "| quickstart | digits | lenet | random_prune | 14 |" in table
    png = tmp_path / "report" / "accuracy_vs_sparsity_quickstart-digits-lenet.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


BAD_INPUTS = {
    "misspelled key": ({"base": {"trian": {"lr": 0.1}}}, "trian"),
    "unknown model": ({"base": {"model": {"name": "resnet99"}}}, "model.name"),
    "impossible fraction": ({"base": {"prune": {"fraction": 1.5}}}, "prune.fraction"),
    "missing CIFAR": ({"base": {"data": {"name": "cifar10"}}}, "cifar-10-batches-py"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_exits_at_once_with_one_line(case, quickstart_store, tmp_path, cli):
    raw, needle = BAD_INPUTS[case]
    sweep = yaml.safe_load(QUICKSTART.read_text())
    for key, value in raw["base"].items():
        sweep["base"][key] = {**sweep["base"].get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(sweep))
    before = {p: p.stat().st_mtime_ns for p in quickstart_store.rglob("*")}
    done = cli("run", path, "--storage", quickstart_store, "--data-root", tmp_path / "data",
               env={"RAYLTH_OFFLINE": "1"}, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], done.stderr
    assert {p: p.stat().st_mtime_ns for p in quickstart_store.rglob("*")} == before


def test_python_api_runs_a_sweep_dict(tmp_path, ray_cluster):
    import ray

    sweep = {"name": "api", "base": {"levels": 2, "data": {"name": "digits"}, "model": {"name": "lenet"},
                                     "train": {"duration": "3ep", "batch_size": 64, "lr": 0.05}},
             "grid": {"method": ["imp", "reinit"], "seed": [3]}}
    ray.init(address=ray_cluster)  # the session's cluster (conftest)
    try:
        outcome = raylth.run(sweep, storage=tmp_path / "s")
        assert outcome.ok and sorted(outcome.finished) == ["method=imp,seed=3", "method=reinit,seed=3"]
        frame = raylth.results(tmp_path / "s")
        assert sorted(frame[frame.method == "reinit"].level) == [1, 2]
        assert (frame.seed == 3).all()
        again = raylth.run(sweep, storage=tmp_path / "s")
        assert again.finished == [] and len(again.cached) == 2
        states = raylth.status(tmp_path / "s")["api"]
        assert [s.state for s in states] == ["finished", "finished"]
    finally:
        ray.shutdown()


def test_instability_sweep_through_tune_and_its_report(tmp_path, cli, ray_cluster):
    """The instability quickstart, cut to one seed and one analysed level."""
    sweep = yaml.safe_load((REPO / "sweeps" / "instability_quickstart.yaml").read_text())
    sweep["base"]["levels"] = 3
    sweep["base"]["train"]["duration"] = "3ep"
    sweep["base"]["lmc"]["levels"] = [3]
    sweep["base"]["sharpness"] = {"levels": [3], "probes": 10, "iterations": 5, "batches": 2}
    sweep["grid"] = {"seed": [0], "rewind": ["0it", "100it"], "method": ["imp"]}
    path = tmp_path / "instability.yaml"
    path.write_text(yaml.safe_dump(sweep))
    done = cli("run", path, "--storage", tmp_path / "s", "--address", ray_cluster)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "12 jobs finished" in done.stdout  # 2 trunks, 4 children, 2 analyses, 2 Hessians, 2 splits
    frame = raylth.results(tmp_path / "s")
    lmc = frame[frame.stage == "lmc"]
    assert sorted(lmc.rewind) == ["0it", "100it"] and (lmc.level == 3).all()
    assert lmc.instability_test.between(0, 1).all() and lmc.stable.notna().all()
    report = cli("report", tmp_path / "s", "--out", tmp_path / "report")
    assert report.returncode == 0, report.stderr
    written = {p.name for p in (tmp_path / "report").iterdir()}
    name = "instability_quickstart-digits-conv3"
    assert {"instability.md", f"instability_vs_sparsity_{name}.png", f"instability_vs_rewind_{name}.png",
            f"error_vs_alpha_{name}_imp_k0it.png", f"error_vs_alpha_{name}_imp_k100it.png"} <= written
    assert sum(n.startswith("landscape_") for n in written) == 2
    assert "| instability_quickstart | imp | 100it | 3 |" in (tmp_path / "report" / "instability.md").read_text()
    assert f"pruned_curvature_{name}.png" in written
    sharpness = (tmp_path / "report" / "sharpness.md").read_text()
    assert sharpness.count("| instability_quickstart | imp | 0 | train_") == 2  # the dense net at k = 0it, 100it
    assert ":init | 3 | 48.8% |" in sharpness and ":step_100it | 3 | 48.8% |" in sharpness


def _readme_commands() -> list[str]:
    """Every `raylth ...` command of the README's shell blocks, in order."""
    import re

    commands = []
    for block in re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S):
        for line in block.splitlines():
            for part in line.split("#")[0].split("&&"):
                if part.strip().startswith("raylth "):
                    commands.append(part.strip())
    return commands


def test_every_command_of_the_readme_runs(quickstart_store, tmp_path, cli):
    """In a folder holding the stored quickstart as ./raylth-results (a copy) and the
    repository's sweeps, each README command exits 0; IMP_ID is a stored imp level."""
    import shutil

    shutil.copytree(quickstart_store, tmp_path / "raylth-results")
    (tmp_path / "sweeps").symlink_to(REPO / "sweeps")
    imp = raylth.results(quickstart_store)
    imp_id = imp[(imp.method == "imp") & (imp.level == 3)].id.iloc[0]
    commands = _readme_commands()
    assert len(commands) >= 7 and any(c.startswith("raylth export IMP_ID") for c in commands), commands
    for command in commands:
        args = command.replace("IMP_ID", imp_id).split()[1:]
        done = cli(*args, cwd=tmp_path, timeout=300)
        assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-2000:])
    assert (tmp_path / "ticket.pt").is_file() and (tmp_path / "report" / "summary.md").is_file()
