"""Mount the recipe examples beside the installed plugins: each folder here
is imported as ``raylth.plugins.<kind>.<name>``, as a new folder under
raylth/plugins/<kind>/ would be. Registries are process-global, so this runs
only in the fresh interpreter tests/test_recipes.py starts."""

import importlib
import pathlib

import raylth.plugins  # noqa: F401  (the installed plugins first)

HERE = pathlib.Path(__file__).parent
KINDS = ("distillers", "analyses", "methods")


def mount() -> list[str]:
    names = []
    for kind in KINDS:
        package = importlib.import_module(f"raylth.plugins.{kind}")
        package.__path__.append(str(HERE / kind))
        for folder in sorted(p for p in (HERE / kind).iterdir() if (p / "__init__.py").is_file()):
            importlib.import_module(f"{package.__name__}.{folder.name}")
            names.append(f"{kind}/{folder.name}")
    return names


if __name__ == "__main__":
    import sys

    import pytest

    print("mounted:", ", ".join(mount()))
    sys.exit(pytest.main(sys.argv[1:]))
