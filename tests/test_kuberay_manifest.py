"""raycluster.yaml against KubeRay's published RayCluster CRD schema, offline.

The schema (tests/data/kuberay/raycluster-v1-schema.json) is the v1 openAPIV3Schema of
ray-operator/config/crd/bases/ray.io_rayclusters.yaml, copied unchanged (its "source" says from
where). The API server prunes fields a CRD does not declare instead of refusing them, so a typo
would vanish silently on `kubectl apply`; the test validates strictly, as kubeconform -strict does:
an object that declares its properties takes no others unless it says it preserves unknown fields.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

jsonschema = pytest.importorskip("jsonschema")

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "raycluster.yaml"


def strict(schema):
    if isinstance(schema, dict):
        schema = {key: strict(value) for key, value in schema.items()}
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


@pytest.fixture(scope="module")
def validator():
    published = json.loads((REPO / "tests" / "data" / "kuberay" / "raycluster-v1-schema.json").read_text())
    assert "ray-project/kuberay" in published["source"]
    return jsonschema.Draft7Validator(strict(published["openAPIV3Schema"]))


@pytest.fixture(scope="module")
def manifest():
    return yaml.safe_load(MANIFEST.read_text())


def errors(validator, document) -> list[str]:
    return ["/".join(map(str, e.absolute_path)) + ": " + e.message for e in validator.iter_errors(document)]


def test_the_manifest_validates_against_kuberays_crd(validator, manifest):
    assert errors(validator, manifest) == []
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayCluster"


@pytest.mark.parametrize("path, value", [
    (("spec", "workerGroupSpecs", 0, "minReplica"), 0),  # a typo of minReplicas
    (("spec", "authOptions", "mode"), "password"),  # not one of the modes
    (("spec", "headGroupSpec", "template", "spec", "containers", 0, "resources", "limit"), {}),
])
def test_a_broken_manifest_is_refused(validator, manifest, path, value):
    broken = copy.deepcopy(manifest)
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert errors(validator, broken)


def test_the_manifest_mirrors_cluster_yaml(manifest):
    cluster = yaml.safe_load((REPO / "cluster.yaml").read_text())
    spec = manifest["spec"]
    assert spec["authOptions"] == {"mode": "token"}  # the operator makes the secret; none is committed
    assert spec["rayVersion"] == "2.60.0" and spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    pods = [spec["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in spec["workerGroupSpecs"]]
    assert {c["image"] for pod in pods for c in pod["containers"]} == {cluster["docker"]["image"]}
    gpus = sorted(int(g["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"])
                  for g in spec["workerGroupSpecs"])
    launcher = sorted(t["resources"].get("GPU", 0) for t in cluster["available_node_types"].values()
                      if t["resources"].get("GPU"))
    assert gpus == launcher
    limits = {g["groupName"]: (g["minReplicas"], g["maxReplicas"]) for g in spec["workerGroupSpecs"]}
    assert limits == {"gpu-1x": (0, 8), "gpu-8x": (0, 2)}


def test_the_install_names_every_dependency_the_ray_image_lacks(manifest):
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    in_the_image = {"ray", "numpy", "pyyaml", "pyarrow"}  # rayproject/ray ships these
    wanted = {d.split(">")[0].split("=")[0].split("[")[0] for d in declared} - in_the_image
    install = manifest["spec"]["headGroupSpec"]["template"]["spec"]["initContainers"][0]["command"]
    assert {a.split(">")[0] for a in install[4:]} == wanted
