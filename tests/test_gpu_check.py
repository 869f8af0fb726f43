"""bench/gpu_check.sh's CPU-visible parts: the plan and its budget, argument
handling, and the summary JSON (the GPU parts run on a lent GPU machine)."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu_check.sh"


def test_dry_run_lists_every_part_within_eight_minutes():
    out = subprocess.run(["bash", str(SCRIPT), "--dry-run"], capture_output=True, text=True, check=True).stdout
    parts = [line.split()[0] for line in out.splitlines()[:-1]]
    assert parts == ["install", "data", "gpu_tests", "device_tests", "epoch_time", "packing", "mtt_memory", "gpu_study"]
    budget = int(out.splitlines()[-1].split()[2].rstrip("s"))
    assert budget <= 480
    for script in ("epoch_time", "packing", "mtt_memory", "gpu_study"):
        assert (REPO / "bench" / f"{script}.py").is_file() and f"bench/{script}.py" in out


def test_unknown_argument_is_one_line_and_exit_2():
    run = subprocess.run(["bash", str(SCRIPT), "--bogus"], capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.strip().startswith("usage: bench/gpu_check.sh")


def test_summary_records_each_parts_status_and_the_benchmark_figures(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "epoch_time.log").write_text("line\n" * 30 + "done\n")
    (tmp_path / "epoch_time-cpu.json").write_text(json.dumps({"figures": {"dense_s": 1.5}}))
    subprocess.run([sys.executable, str(REPO / "bench" / "common.py"), "--summary", str(tmp_path), str(logs),
                    "epoch_time|0|12.5|140", "packing|124|60.0|60", "gpu_study|1|3.0|90"], check=True,
                   capture_output=True)
    record = json.loads((tmp_path / "gpu_check-cpu.json").read_text())
    assert [(p["name"], p["status"]) for p in record["parts"]] == [
        ("epoch_time", "ok"), ("packing", "timeout"), ("gpu_study", "failed")]
    assert record["parts"][0]["log_tail"][-1] == "done" and len(record["parts"][0]["log_tail"]) == 20
    assert record["results"] == {"epoch_time-cpu": {"dense_s": 1.5}}
    assert record["environment"]["device_name"]
