"""What `raylth.submit` uploads from the repository root (Ray's own packaging
rules for `excludes`, .gitignore lines): every module of raylth/, and not the
data, results or git folders."""

import logging
from pathlib import Path

from raylth.api import SECRET_EXCLUDES, UPLOAD_EXCLUDES

REPO = Path(__file__).resolve().parents[1]


def uploaded_files(root: Path) -> set[Path]:
    """What Ray's own packaging walks into the upload of ``root`` under raylth's excludes."""
    from ray._private.runtime_env.packaging import _dir_travel, _get_excludes

    uploaded = []
    _dir_travel(root, [_get_excludes(root, [*UPLOAD_EXCLUDES, *SECRET_EXCLUDES])],
                lambda p: uploaded.append(p.relative_to(root)) if p.is_file() else None,
                include_gitignore=True, logger=logging.getLogger("test"))
    return set(uploaded)


def test_the_upload_holds_the_whole_package():
    uploaded = uploaded_files(REPO)
    modules = {p.relative_to(REPO) for p in (REPO / "raylth").rglob("*.py")}
    assert modules and modules <= uploaded, sorted(modules - uploaded)[:5]
    assert not any(p.parts[0] in (".git", "raylth-results", "data", ".bench-data") for p in uploaded)


def test_secrets_are_left_out_wherever_they_lie(tmp_path):
    secrets = [".env", "sweeps/.env.local", "keys/cluster.pem", "tls/server.key", ".aws/credentials",
               "gcloud-credentials.json", ".ray/auth_token", "auth_token", "deploy/id_rsa", "hf.token", ".netrc"]
    kept = ["raylth/__init__.py", "sweeps/quickstart.yaml", "notes/keyboard.md", "raylth/engine/data/cifar.py"]
    for name in secrets + kept:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    assert uploaded_files(tmp_path) == {Path(k) for k in kept}
