"""CONTRIBUTING.md's recipes for a sweep method, an analysis and a
distillation method, followed once each: tests/recipes/<kind>/<name>/ is one
plugin folder per recipe, exactly the files the recipe names. In a fresh
interpreter (registries are process-global) they are mounted as folders of
raylth/plugins, then every template test of tests/test_registries.py runs on
them unedited, and tests/recipes/examples.py runs a sweep using all three."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def test_each_recipe_is_one_folder_that_passes_the_templates_and_runs():
    done = subprocess.run([sys.executable, str(HERE / "recipes" / "mount.py"), "-q", "-rA", "-n", "0",
                           "-p", "no:cacheprovider", "-k", "imp_last or weight_norm or moments or core or report_section or examples",
                           str(HERE / "test_registries.py"), str(HERE / "recipes" / "examples.py")],
                          capture_output=True, text=True, timeout=300, cwd=HERE.parent)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "mounted: distillers/moments, analyses/weight_norm, methods/imp_last" in done.stdout
    for template in ("test_every_method_declares_an_example_that_plans_registered_stages[imp_last]",
                     "test_every_analysis_declares_its_block_jobs_columns_and_report_section[weight_norm]",
                     "test_every_distillation_method_declares_its_fields_runner_and_defaults[moments]"):
        assert f"PASSED tests/test_registries.py::{template}" in done.stdout, template
