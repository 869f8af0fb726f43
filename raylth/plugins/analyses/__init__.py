"""Analyses: one module or package each, registering itself when imported (raylth.plugins)."""
