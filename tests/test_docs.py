"""The documentation: the site under docs/ builds with ``mkdocs build
--strict`` (a broken link, a missing page or a nav entry without its file
fails), the README stays a front page, and every Python block of the docs
imports only what exists."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_site_builds_strictly(tmp_path):
    pytest.importorskip("material", reason="mkdocs-material is in the test extra")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (tmp_path / "site" / "guide" / "paper" / "index.html").is_file()


def test_the_readme_is_a_front_page_whose_links_exist():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 250
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target


def _python_blocks():
    for page in sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]):
        for block in re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S):
            yield page.relative_to(ROOT), block


@pytest.mark.parametrize("page,block", list(_python_blocks()), ids=lambda v: str(v)[:40])
def test_every_python_block_imports_what_exists(page, block):
    import importlib

    for node in ast.walk(ast.parse(block)):
        if isinstance(node, ast.ImportFrom) and node.module.startswith("raylth"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{page}: {node.module} has no {alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)


def test_the_cpu_reproductions_text_quotes_its_committed_report():
    folder = ROOT / "docs" / "paper_cpu"
    report = "\n".join(p.read_text() for p in (folder / "report").glob("*.md"))
    quoted = re.findall(r"\d+\.\d\d ± \d+\.\d\d", (folder / "README.md").read_text())
    assert len(quoted) >= 10
    assert [q for q in quoted if q not in report] == []
    instability = (folder / "report" / "instability_by_sparsity.md").read_text()
    assert all(kind in instability for kind in ("dense k=0it", "distilled_imp k=0it", "distilled_random k=0it", "imp k="))
