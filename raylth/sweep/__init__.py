"""Sweeps: files, plans, jobs and their run on Ray Tune (raylth.sweep.runner)."""
