"""Impossible values and stray files (part of the fault campaign): one line,
exit 2, nothing written, no sweep record either; readers skip what is not theirs."""

import pytest
import yaml

from raylth.cli.main import main

BASE = {"levels": 1, "data": {"name": "digits"}, "model": {"name": "lenet"},
        "train": {"duration": "1ep", "batch_size": 64, "lr": 0.05}}


def _sweep(tmp_path, base=None, grid=None, **top):
    raw = {"name": "bad", "base": BASE if base is None else base, "grid": {"seed": [0]} if grid is None else grid}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw | top))
    return path


@pytest.mark.parametrize("base, needle", [
    (BASE | {"train": BASE["train"] | {"lr": float("nan")}}, "train.lr: nan is not a finite number"),
    (BASE | {"train": BASE["train"] | {"weight_decay": float("inf")}}, "train.weight_decay: inf is not a finite"),
    (BASE | {"seeds": {"init": 2 ** 70, "order": 0, "augment": 0}}, "is outside 0..2**63-1"),
    (BASE | {"levels": 1000}, "levels: 1000 levels of prune.fraction 0.2 keep"),
    ({}, "the sweep names no trial"),
], ids=["nan lr", "inf weight decay", "huge seed", "1000 levels", "empty trial"])
def test_an_impossible_value_is_one_line_and_nothing_is_written(tmp_path, capsys, base, needle):
    grid = {} if base == {} else ({"method": ["imp"]} if "seeds" in base else None)
    store = tmp_path / "store"
    assert main(["run", str(_sweep(tmp_path, base, grid)), "--storage", str(store)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not store.exists()


@pytest.mark.slow  # Ray: a local cluster of its own, which the refusal shuts down
def test_resources_no_node_gives_are_refused_before_the_record(tmp_path, capsys):
    store = tmp_path / "store"
    assert main(["run", str(_sweep(tmp_path, resources={"cpu": 99, "gpu": 0})), "--storage", str(store)]) == 2
    assert "one job needs 99 CPU" in capsys.readouterr().err
    assert not (store / "sweeps").exists()


def test_readers_skip_and_name_a_stray_file_under_sweeps(tmp_path, capsys, caplog):
    store = tmp_path / "store"
    (store / "sweeps").mkdir(parents=True)
    (store / "sweeps" / "list.yaml").write_text("- a\n- b\n")
    (store / "sweeps" / "broken.yaml").write_text("a: [b\n")
    assert main(["status", str(store)]) == 0
    assert main(["results", str(store)]) in (0, 2)  # no rows: one line, not a traceback
    assert "Traceback" not in capsys.readouterr().err
    assert "sweeps/list.yaml: not a sweep record raylth wrote; skipped" in caplog.text
