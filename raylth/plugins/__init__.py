"""Plugins: every sweep method (methods/), analysis (analyses/) and
distillation method (distillers/), each declared once, in a folder of its
own: its spec fields, checks, jobs, runner, result columns and report
section, registered in the core's registries (raylth.specs.distill,
raylth.stages, raylth.reporting). The core never imports a plugin; importing
this package (raylth does, first) imports every one, so each registers itself.
Adding one: CONTRIBUTING.md.
"""

import importlib
import pkgutil

for _kind in ("distillers", "analyses", "methods"):
    _package = importlib.import_module(f"{__name__}.{_kind}")
    for _module in pkgutil.iter_modules(_package.__path__):
        importlib.import_module(f"{_package.__name__}.{_module.name}")
