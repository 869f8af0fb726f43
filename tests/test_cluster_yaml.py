"""cluster.yaml against Ray's own cluster-launcher schema, offline (no AWS credentials, no network)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import ray
from raylth.cluster import validate_cluster_config
from raylth.errors import RaylthError

REPO = Path(__file__).resolve().parents[1]
CLUSTER_YAML = REPO / "cluster.yaml"


@pytest.fixture(scope="module")
def shipped() -> dict:
    with open(CLUSTER_YAML, encoding="utf-8") as f:
        return yaml.safe_load(f)


def _write(tmp_path: Path, config: dict, name: str = "cluster.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def _rejected(tmp_path: Path, config: dict) -> str:
    path = _write(tmp_path, config)
    with pytest.raises(RaylthError) as info:
        validate_cluster_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message


# --- the shipped file ------------------------------------------------------------------------


def test_shipped_cluster_yaml_validates():
    config = validate_cluster_config(CLUSTER_YAML)
    assert config["cluster_name"] == "raylth"
    assert config["provider"]["type"] == "aws"
    assert config["provider"]["region"] == "us-west-2"
    # prepare_config merged the common setup commands in front of the head/worker ones.
    assert config["head_setup_commands"][0] == "pip install -e /home/ray/raylth"
    assert config["worker_setup_commands"][0] == "pip install -e /home/ray/raylth"


def test_shipped_head_takes_no_work_and_workers_have_gpus(shipped):
    types = shipped["available_node_types"]
    head = types[shipped["head_node_type"]]
    assert head["resources"] == {"CPU": 0}
    assert "GPU" not in head["resources"]
    assert types["gpu_spot_1x"]["resources"]["GPU"] == 1
    assert types["gpu_spot_1x"]["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert types["gpu_ondemand_8x"]["resources"]["GPU"] == 8
    assert "InstanceMarketOptions" not in types["gpu_ondemand_8x"]["node_config"]
    for name in ("gpu_spot_1x", "gpu_ondemand_8x"):
        assert types[name]["min_workers"] <= types[name]["max_workers"]


def test_shipped_image_matches_pinned_ray_and_installs_the_repo(shipped):
    image = shipped["docker"]["image"]
    major_minor = ".".join(ray.__version__.split(".")[:2])
    assert image.startswith(f"rayproject/ray:{major_minor}."), (image, ray.__version__)
    assert image.endswith("-py311-gpu")
    assert shipped["docker"]["pull_before_run"] is True
    assert shipped["file_mounts"]["/home/ray/raylth"] == "."
    assert "pip install -e /home/ray/raylth" in shipped["setup_commands"]


def test_validation_needs_no_aws_and_no_network(tmp_path):
    """Run in a fresh interpreter with sockets disabled and no AWS config: still valid, no boto3."""
    code = (
        "import socket, sys\n"
        "def _no_net(*a, **k):\n"
        "    raise OSError('network disabled by test')\n"
        "socket.socket.connect = _no_net\n"
        "socket.create_connection = _no_net\n"
        "socket.getaddrinfo = _no_net\n"
        "from raylth.cluster import validate_cluster_config\n"
        f"validate_cluster_config({str(CLUSTER_YAML)!r})\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore'))\n"
        "assert not loaded, loaded\n"
        "print('OFFLINE-OK')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_CONFIG_FILE"] = str(tmp_path / "no-aws-config")
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "no-aws-credentials")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "OFFLINE-OK" in result.stdout


# --- what Ray's schema rejects ---------------------------------------------------------------


def test_unknown_top_level_key_fails_with_rays_message(tmp_path, shipped):
    config = copy.deepcopy(shipped)
    config["storage_bucket"] = "s3://nope"
    message = _rejected(tmp_path, config)
    assert "Additional properties are not allowed ('storage_bucket' was unexpected)" in message


@pytest.mark.parametrize(
    "break_head",
    [
        pytest.param(lambda c: c["available_node_types"].pop(c["head_node_type"]), id="head-type-removed"),
        pytest.param(lambda c: c.update(head_node_type="no_such_type"), id="head-type-dangling"),
        # Ray's defaults.yaml then supplies head_node_type "ray.head.default", not one of ours.
        pytest.param(lambda c: c.pop("head_node_type"), id="head_node_type-key-removed"),
    ],
)
def test_missing_head_node_type_fails(tmp_path, shipped, break_head):
    config = copy.deepcopy(shipped)
    break_head(config)
    message = _rejected(tmp_path, config)
    assert "`head_node_type` must be one of `available_node_types`." in message


def test_typo_in_node_type_key_fails(tmp_path, shipped):
    config = copy.deepcopy(shipped)
    spot = config["available_node_types"]["gpu_spot_1x"]
    spot["max_worker"] = spot.pop("max_workers")
    message = _rejected(tmp_path, config)
    assert "Additional properties are not allowed ('max_worker' was unexpected)" in message
    assert "available_node_types/gpu_spot_1x" in message


def test_typo_resources_key_fails_as_missing_resources(tmp_path, shipped):
    config = copy.deepcopy(shipped)
    spot = config["available_node_types"]["gpu_spot_1x"]
    spot["resource"] = spot.pop("resources")
    message = _rejected(tmp_path, config)
    assert "'resources' is a required property" in message


def test_typo_in_docker_key_fails(tmp_path, shipped):
    config = copy.deepcopy(shipped)
    config["docker"]["pull_befor_run"] = config["docker"].pop("pull_before_run")
    message = _rejected(tmp_path, config)
    assert "Additional properties are not allowed ('pull_befor_run' was unexpected)" in message


def test_fractional_gpu_resource_fails(tmp_path, shipped):
    config = copy.deepcopy(shipped)
    config["available_node_types"]["gpu_spot_1x"]["resources"]["GPU"] = 0.5
    message = _rejected(tmp_path, config)
    assert "0.5 is not of type 'integer'" in message


def test_min_workers_over_global_max_fails(tmp_path, shipped):
    config = copy.deepcopy(shipped)
    config["available_node_types"]["gpu_spot_1x"]["min_workers"] = config["max_workers"] + 1
    message = _rejected(tmp_path, config)
    assert "global `max_workers` is smaller than the sum of `min_workers`" in message


def test_wrongly_typed_field_is_named(tmp_path, shipped):
    config = copy.deepcopy(shipped)
    config["setup_commands"] = "pip install -e /home/ray/raylth"
    message = _rejected(tmp_path, config)
    assert "is not of type 'array' (at setup_commands)" in message


def test_missing_cluster_name_fails(tmp_path, shipped):
    # Stricter than `ray up`, which fills "default" from defaults.yaml before its schema check;
    # we also check the file as written, where Ray's schema marks cluster_name required.
    config = copy.deepcopy(shipped)
    del config["cluster_name"]
    message = _rejected(tmp_path, config)
    assert "'cluster_name' is a required property" in message


def test_missing_file_and_bad_yaml_fail(tmp_path):
    missing = tmp_path / "absent.yaml"
    with pytest.raises(RaylthError, match="cannot read cluster config"):
        validate_cluster_config(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("cluster_name: [unclosed\n", encoding="utf-8")
    with pytest.raises(RaylthError, match="not valid YAML"):
        validate_cluster_config(bad)


# --- what Ray's schema does NOT catch (pinned so a Ray upgrade that tightens it is noticed) ----


def test_typos_inside_node_config_and_provider_are_not_caught(tmp_path, shipped):
    config = copy.deepcopy(shipped)
    # node_config goes to EC2 create_instances as is; provider allows any extra key.
    spot = config["available_node_types"]["gpu_spot_1x"]
    spot["node_config"]["InstanceTyp"] = spot["node_config"].pop("InstanceType")
    config["provider"]["cache_stoped_nodes"] = config["provider"].pop("cache_stopped_nodes")
    validate_cluster_config(_write(tmp_path, config))


def test_every_shipped_gpu_sweep_fits_every_gpu_node_type_and_packing_sweeps_pack(shipped):
    """A sweep's per-worker resources against cluster.yaml's GPU node types:
    at least one job per node, and a sweep asking a fraction g of a GPU gets
    1/g jobs per GPU there (its CPUs must not be what limits it)."""
    from raylth.cluster import gpu_node_types, jobs_per_node
    from raylth.api import load_sweep

    node_types = gpu_node_types(shipped)
    assert set(node_types) == {"gpu_spot_1x", "gpu_ondemand_8x"}
    checked = 0
    for path in sorted((REPO / "sweeps").glob("*.yaml")):
        sweep = load_sweep(path)
        gpu = sweep.resources["gpu"] if hasattr(sweep, "trials") else sweep.resources.get("gpu", 0)
        if not gpu:
            continue
        for name, node in node_types.items():
            per_node = jobs_per_node(sweep.resources, node)
            assert per_node >= 1, f"{path.name}: no job fits a {name} node"
            if gpu < 1:
                assert per_node == round(node["GPU"] / gpu), (
                    f"{path.name}: {per_node} jobs on a {name} node, not {node['GPU'] / gpu:g}: "
                    f"resources.cpu {sweep.resources['cpu']} limits the packing")
        checked += 1
    assert checked >= 5


def test_jobs_per_node_counts_what_ray_can_pack():
    from raylth.cluster import jobs_per_node

    assert jobs_per_node({"cpu": 4, "gpu": 0.5}, {"CPU": 4, "GPU": 1}) == 1
    assert jobs_per_node({"cpu": 2, "gpu": 0.5}, {"CPU": 4, "GPU": 1}) == 2
    assert jobs_per_node({"cpu": 1, "gpu": 0.25}, {"CPU": 96, "GPU": 8}) == 32
    assert jobs_per_node({"cpu": 1, "gpu": 1}, {"CPU": 8}) == 0


def test_every_node_runs_with_token_authentication_and_no_open_dashboard(shipped):
    assert "--env RAY_AUTH_MODE=token" in shipped["docker"]["run_options"]
    starts = shipped["head_start_ray_commands"][1:] + shipped["worker_start_ray_commands"][1:]
    assert starts and all("RAY_AUTH_MODE=token ray start" in command for command in starts)
    assert not any("dashboard-host" in command for command in starts)  # the head's localhost: `ray dashboard`
    assert shipped["file_mounts"]["/home/ray/.ray/auth_token"] == "~/.ray/auth_token"  # generated, not committed
    assert {"**/.env", "**/*.pem", "**/*.key", "**/auth_token"} <= set(shipped["rsync_exclude"])
    assert not list(REPO.rglob("auth_token"))
