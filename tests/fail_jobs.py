"""The `raylth` command with some sweep jobs made to fail, for tests of failure handling:

    python tests/fail_jobs.py "method=imp,seed=1;..." run SWEEP --storage STORE

Every job whose label contains one of the ';'-separated strings (labels hold
commas) raises in its Tune trial. This driver replaces the production
trainable with a wrapper before the sweep starts; the wrapper is a closure,
so Tune pickles it by value and the Ray workers run it too."""

import sys

from raylth.cli.main import main
from raylth.sweep import runner


def failing(trainable, parts: list[str]):
    def trainable_failing_some(config, **kwargs):
        label = config["trial"]
        if any(part in label for part in parts):
            raise RuntimeError(f"injected failure of job {label}")
        return trainable(config, **kwargs)

    return trainable_failing_some


if __name__ == "__main__":
    runner._tune_trainable = failing(runner._tune_trainable, [p for p in sys.argv[1].split(";") if p])
    sys.exit(main(sys.argv[2:]))
