"""raylth command line: run, status, verify, results, report."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

from raylth import api
from raylth.errors import Interrupted, RaylthError

DEFAULT_STORAGE = "raylth-results"


def _cmd_run(args) -> int:
    outcome = api.run(args.sweep, storage=args.storage, data_root=args.data_root, address=args.address)
    if getattr(outcome, "kind", "sweep") == "search":  # an Optuna search (kind: search)
        print("\n".join(outcome.lines()))
        return 0 if outcome.ok else 1
    done = len(outcome.cached) + len(outcome.finished)
    print(f"{outcome.name}: {done} jobs finished ({len(outcome.cached)} already stored, "
          f"{len(outcome.finished)} run now), {len(outcome.failed)} failed; results in {outcome.storage}")
    for label, error in outcome.failed.items():
        print(f"  failed [{label}]: {error}")
    return 0 if outcome.ok else 1


def _cmd_status(args) -> int:
    sweeps = api.status(args.storage)
    if not sweeps:
        print(f"{args.storage}: no sweeps recorded yet")
        return 0
    from raylth.sweep.plan import JobState

    states_shown = JobState.STATES
    print(f"{'sweep':<28} {'jobs':>6} " + " ".join(f"{s:>11}" for s in states_shown))
    for name, states in sweeps.items():
        count = {s: sum(t.state == s for t in states) for s in states_shown}
        print(f"{name:<28} {len(states):>6} " + " ".join(f"{count[s]:>11}" for s in states_shown))
        for t in states:
            if args.verbose or t.state in ("failed", "damaged"):
                why = {"failed": t.error, "damaged": "; ".join(t.damaged.values())}.get(t.state)
                note = f"  ({why})" if why else ""
                print(f"    {t.state:<11} {t.finished}/{len(t.job.ids)} artifacts  {t.job.label}{note}")
    if any(t.state in ("damaged", "interrupted") for states in sweeps.values() for t in states):
        print("run the same sweep again to recompute damaged artifacts and continue interrupted jobs")
    return 0


def _cmd_verify(args) -> int:
    def progress(finding) -> None:
        if finding.problem is not None:
            moved = f"; moved to {finding.moved_to}" if finding.moved_to else ""
            print(f"damaged  {finding.id}: {finding.problem}{moved}")
        elif args.verbose:
            print(f"ok       {finding.id}")

    findings = api.verify(args.storage, repair=args.repair, progress=progress)
    damaged = sum(f.problem is not None for f in findings)
    print(f"{args.storage}: {len(findings)} artifacts checked, {len(findings) - damaged} intact, {damaged} damaged")
    if damaged and not args.repair:
        print("run `raylth verify --repair` (or `raylth run` of the sweep) to move them aside and recompute them")
        return 1
    return 0


def _cmd_results(args) -> int:
    frame = api.results(args.storage, sweep=args.sweep)
    if args.format == "csv":
        frame.to_csv(sys.stdout, index=False)
    elif args.format == "json":
        print(frame.to_json(orient="records", indent=1))
    else:
        print(frame.to_markdown(index=False) if _has_tabulate() else frame.to_string(index=False))
    return 0


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
        return True
    except ImportError:
        return False


def _cmd_report(args) -> int:
    written = api.report(args.storage, out=args.out, sweep=args.sweep)
    for path in written.values():
        print(path)
    return 0


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"raylth: warning: {message}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raylth", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a sweep or an Optuna search (again: finishes only what is missing)")
    run.add_argument("sweep", help="sweep YAML file, e.g. sweeps/quickstart.yaml (kind: search: an Optuna search)")
    run.add_argument("--storage", help="storage root (default: the sweep's storage, else raylth-results)")
    run.add_argument("--data-root", help="folder holding data sets (default: $RAYLTH_DATA, the sweep's data_root, else ./data)")
    run.add_argument("--address", help="Ray cluster to join (default: $RAY_ADDRESS, else a new local one)")
    run.set_defaults(func=_cmd_run)

    status = sub.add_parser("status", help="finished / running / missing trials per sweep")
    status.add_argument("storage", nargs="?", default=DEFAULT_STORAGE)
    status.add_argument("-v", "--verbose", action="store_true", help="list every trial")
    status.set_defaults(func=_cmd_status)

    verify = sub.add_parser("verify", help="check every stored file against its checksum (--repair: move damaged "
                                           "artifacts aside to be recomputed)")
    verify.add_argument("storage", nargs="?", default=DEFAULT_STORAGE)
    verify.add_argument("--repair", action="store_true", help="move damaged artifacts to .broken/")
    verify.add_argument("-v", "--verbose", action="store_true", help="list intact artifacts too")
    verify.set_defaults(func=_cmd_verify)

    results = sub.add_parser("results", help="one row per finished result")
    results.add_argument("storage", nargs="?", default=DEFAULT_STORAGE)
    results.add_argument("--format", choices=["csv", "md", "json"], default="md")
    results.add_argument("--sweep", help="only this sweep")
    results.set_defaults(func=_cmd_results)

    report = sub.add_parser("report", help="table and plots of accuracy vs sparsity")
    report.add_argument("storage", nargs="?", default=DEFAULT_STORAGE)
    report.add_argument("--out", default="raylth-report", help="output folder (default: raylth-report)")
    report.add_argument("--sweep", help="only this sweep")
    report.set_defaults(func=_cmd_report)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    warnings.showwarning = _one_line_warning
    try:
        return args.func(args)
    except RaylthError as err:
        print(f"raylth: {'' if isinstance(err, Interrupted) else 'error: '}{err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:  # before any work started
        print("raylth: interrupted; nothing was running", file=sys.stderr)
        return 130
    except OSError as err:  # a storage or output fault outside a run (a run reports its own)
        where = f"{err.filename}: " if err.filename else ""
        print(f"raylth: error: {where}{err.strerror or err}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into head and the like
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
