"""``raylth verify``: every file of every artifact in a store against the
size and checksum its manifest records; with ``repair``, damaged artifacts
are moved to .broken/ so the next ``raylth run`` computes them again."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from raylth.store.store import Store


@dataclass
class Finding:
    id: str
    problem: str | None  # None: intact
    moved_to: str | None = None


def verify_store(store: Store, repair: bool = False, progress=None) -> list[Finding]:
    findings = []
    for artifact_id in store.artifact_ids():
        problem = store.scan(artifact_id)
        finding = Finding(artifact_id, problem)
        if problem is not None and repair:
            with warnings.catch_warnings():  # the report says it, once
                warnings.simplefilter("ignore")
                finding.moved_to = store.quarantine(artifact_id, problem)
        if progress is not None:
            progress(finding)
        findings.append(finding)
    return findings
