"""What `raylth.submit` uploads from the repository root (Ray's own packaging
rules for `excludes`, .gitignore lines): every module of raylth/, and not the
data, results or git folders."""

import logging
from pathlib import Path

from raylth.api import UPLOAD_EXCLUDES

REPO = Path(__file__).resolve().parents[1]


def test_the_upload_holds_the_whole_package():
    from ray._private.runtime_env.packaging import _dir_travel, _get_excludes

    uploaded = []
    _dir_travel(REPO, [_get_excludes(REPO, list(UPLOAD_EXCLUDES))],
                lambda p: uploaded.append(p.relative_to(REPO)) if p.is_file() else None,
                include_gitignore=True, logger=logging.getLogger("test"))
    uploaded = set(uploaded)
    modules = {p.relative_to(REPO) for p in (REPO / "raylth").rglob("*.py")}
    assert modules and modules <= uploaded, sorted(modules - uploaded)[:5]
    assert not any(p.parts[0] in (".git", "raylth-results", "data", ".bench-data") for p in uploaded)
