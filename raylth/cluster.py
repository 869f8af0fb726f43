"""Offline check of a Ray cluster-launcher YAML (``cluster.yaml``) against Ray's own schema.

``ray up`` resolves a config in four steps (``ray.autoscaler._private.commands._bootstrap_config``):

1. ``prepare_config``: merge the provider's ``defaults.yaml`` (a file shipped in the Ray wheel) under
   the top-level keys the file leaves out, merge ``setup_commands`` into the head/worker lists, check
   the docker block, fill per-type ``min_workers``/``max_workers``. Pure Python, offline.
2. ``fillout_available_node_types_resources``: for AWS, calls EC2 ``DescribeInstanceTypes`` to
   autodetect each type's CPU/GPU/memory. Needs credentials and network; ``ray up`` only warns if
   it fails. We skip it, which is why ``cluster.yaml`` states ``resources`` for every node type
   (Ray's schema requires the key; without autodetection an absent one fails here).
3. ``validate_config``: ``jsonschema`` against ``ray/autoscaler/ray-schema.json`` plus Ray's own
   cross-field checks (``head_node_type`` is a node type, sum of ``min_workers`` <= ``max_workers``).
   Offline.
4. ``provider_cls.bootstrap_config``: IAM, key pair, subnets, security groups, default AMI. Needs AWS;
   skipped.

We run the same schema on the file as written first (see validate_cluster_config), then steps 1 and
3: no boto3 import, no credentials, no network.

``prepare_config`` and ``validate_config`` live in ``ray.autoscaler._private.util``, a private API.
raylth pins Ray to 2.60 (pyproject.toml), and these two are what ``ray up`` itself calls there; recheck
them when moving the pin.

What Ray's schema does not check: ``node_config`` (passed to EC2 as is) and ``provider`` (open to any
key), so a typo there passes; nor that a type's ``min_workers`` <= its ``max_workers``.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any

import yaml

from raylth.errors import RaylthError


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _ray_message(exc: Exception) -> str:
    """Ray's message for ``exc``, on one line.

    For a jsonschema error, ``str(exc)`` is many lines (it dumps the sub-schema); its ``.message``
    is the one-line part and ``.absolute_path`` where in the config it is. A bare Python error from
    inside prepare_config gets its type name, since e.g. a KeyError alone reads as just ``'x'``.
    """
    import jsonschema

    if isinstance(exc, jsonschema.ValidationError):
        where = "/".join(str(p) for p in exc.absolute_path) or "<top level>"
        return _one_line(f"{exc.message} (at {where})")
    if isinstance(exc, (KeyError, TypeError, AttributeError)):
        return _one_line(f"{type(exc).__name__}: {exc}")
    return _one_line(str(exc) or type(exc).__name__)


def validate_cluster_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load the cluster YAML at ``path`` and check it as ``ray up`` would, without AWS.

    Returns the config as ``prepare_config`` resolved it (defaults filled, setup commands merged).
    Raises ``RaylthError`` with one line naming the file and Ray's message when the file is missing,
    is not YAML, or Ray rejects it.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except OSError as exc:
        raise RaylthError(f"{path}: cannot read cluster config: {_one_line(exc)}") from None
    except yaml.YAMLError as exc:
        raise RaylthError(f"{path}: not valid YAML: {_one_line(exc)}") from None
    if not isinstance(raw, dict):
        raise RaylthError(
            f"{path}: a Ray cluster config must be a YAML mapping, got {type(raw).__name__}"
        )
    # Imported here: they pull in a good part of Ray, and only this function needs them.
    # Private Ray API (Ray pinned to 2.60): the same two calls `ray up` makes, minus the AWS steps.
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    # First the file as written, against the very schema file validate_config loads. `ray up`
    # skips this and schema-checks only after prepare_config has merged defaults, which (a) turns a
    # wrongly typed field into a bare Python error inside prepare_config (e.g. `setup_commands: "pip
    # install ."` -> 'can only concatenate str (not "list") to str') and (b) silently fills a missing
    # `cluster_name` with "default". Checking the raw file names the field instead, and is stricter
    # only where Ray's own schema says the field is required.
    schema_path = os.path.join(os.path.dirname(ray.autoscaler.__file__), "ray-schema.json")
    with open(schema_path, encoding="utf-8") as f:
        schema = json.load(f)
    try:
        jsonschema.validate(raw, schema)
        # prepare_config mutates nested dicts of its input (setup command merge, per-type
        # min/max workers); give it a copy so `raw` stays as written.
        prepared = prepare_config(copy.deepcopy(raw))
        validate_config(prepared)
    # jsonschema.ValidationError: the schema. ValueError/RuntimeError: validate_config's cross-field
    # checks. AssertionError: prepare_config's docker check ("Must provide a container & image
    # name"). NotImplementedError: unknown provider type. The rest: prepare_config indexing a config
    # the schema let through but it cannot handle.
    except (
        jsonschema.ValidationError,
        ValueError,
        RuntimeError,
        AssertionError,
        NotImplementedError,
        KeyError,
        TypeError,
        AttributeError,
    ) as exc:
        raise RaylthError(
            f"{path}: Ray rejected the cluster config: {_ray_message(exc)}"
        ) from None
    return prepared


def jobs_per_node(resources: dict, node: dict) -> int:
    """How many one-worker jobs asking ``resources`` ({cpu, gpu}, a sweep's
    per-worker block) one node offering ``node`` ({"CPU": n, "GPU": m}, as in
    cluster.yaml and ``ray.nodes()``) runs at once: what Ray can pack there."""
    fits = [int(node.get(key.upper(), 0) / need + 1e-9) for key, need in resources.items() if need > 0]
    return min(fits) if fits else 0


def gpu_node_types(config: dict) -> dict[str, dict]:
    """The node types of a cluster config that have GPUs: name -> resources."""
    return {name: spec.get("resources", {}) for name, spec in config.get("available_node_types", {}).items()
            if spec.get("resources", {}).get("GPU", 0) > 0}
