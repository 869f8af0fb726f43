"""Whether every node of the Ray cluster sees a store's folder.

A multi-node run needs its store where every node reaches it: a bucket, or a
file system mounted at the same path on every node. A folder that exists on
each node but is each node's own disk would scatter the results: a job would
not find the artifacts another node made, and the driver would not see its
workers' results. Before anything is stored, the driver writes a token into
the folder and asks one task on each alive node to read it back.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from raylth.errors import StoreError

PROBE_TIMEOUT_S = 120.0  # a node that does not answer by then (busy starting workers) is not judged


def _sees(path: str, token: str) -> bool:
    try:
        return Path(path).read_text() == token
    except OSError:
        return False


def check_shared(store, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Refuse, in one line, a folder store that a node of the cluster does not see (a bucket is
    seen by all by construction; one node needs no check)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [node for node in ray.nodes() if node.get("Alive")]
    if store.is_bucket or len(nodes) < 2:
        return
    token = uuid.uuid4().hex
    marker = store.root / f".raylth-shared-{token}"
    marker.write_text(token)
    try:
        probe = ray.remote(_sees)
        asked = {f"{node['NodeManagerAddress']} ({node['NodeID'][:8]})": probe.options(
            num_cpus=0, max_retries=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        ).remote(str(marker), token) for node in nodes}
        answered, _ = ray.wait(list(asked.values()), num_returns=len(asked), timeout=timeout_s)
        blind = [name for name, ref in asked.items() if ref in answered and not ray.get(ref)]
    finally:
        marker.unlink(missing_ok=True)
    if blind:
        raise StoreError(f"storage {store.location}: node(s) {', '.join(blind)} of the Ray cluster do not see this "
                         "folder (it is a disk of this node only): their jobs would store results no other node "
                         "finds; use a bucket (--storage s3://BUCKET/PATH) or a file system mounted at the same "
                         "path on every node")
