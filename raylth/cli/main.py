"""raylth command line: run, status, verify, results, report, export."""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings

from raylth import api
from raylth.errors import Interrupted, RaylthError

DEFAULT_STORAGE = "raylth-results"


def _cmd_run(args) -> int:
    outcome = api.run(args.sweep, storage=args.storage, data_root=args.data_root, address=args.address,
                      overrides=args.overrides, dry_run=args.dry_run, devices=args.devices,
                      device_kind=args.device_kind)
    if args.dry_run:
        print("\n".join(outcome.lines()))
        return 0
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
    if args.watch is None:
        return _print_status(args)
    if not args.watch > 0:
        raise RaylthError(f"--watch: {args.watch:g} seconds; give a positive interval, e.g. --watch 5")
    try:
        while True:  # refreshed in place until Ctrl-C
            if sys.stdout.isatty():
                print("\033[2J\033[H", end="")
            print(time.strftime("%H:%M:%S"), f"(every {args.watch:g} s; Ctrl-C to stop)")
            _print_status(args)
            sys.stdout.flush()
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0


def _print_status(args) -> int:
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
    from raylth.reporting.results import write_table

    frame = (api.history if args.history else api.results)(args.storage, sweep=args.sweep)
    write_table(frame, args.format, args.out)
    return 0


def _cmd_report(args) -> int:
    written = api.report(args.storage, out=args.out, sweep=args.sweep)
    for path in written.values():
        print(path)
    return 0


def _cmd_export(args) -> int:
    out = args.out or f"{args.ticket}.pt"
    path = api.export(args.storage, args.ticket, out, prune_form=args.prune_form, force=args.force,
                      data_root=args.data_root)
    print(f"{path}: {args.ticket}'s mask and rewind-point weights"
          f"{' (torch.nn.utils.prune form)' if args.prune_form else ''}; torch.load(path, weights_only=True)")
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
    run.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                     help="change a value of the file: train.lr=0.05 'grid.seed=[0,1,2]' (YAML values)")
    run.add_argument("--dry-run", action="store_true",
                     help="start nothing: print jobs by stage, what is stored, resources and the estimated cost")
    run.add_argument("--devices", type=float, default=1,
                     help="--dry-run: GPUs (or CPU jobs) the cluster gives at once, for the wall time (default 1)")
    run.add_argument("--device-kind", help="--dry-run: the GPU kind that prices a GPU sweep (default nvidia-a10g)")
    run.set_defaults(func=_cmd_run)
    _add_store_commands(sub)
    return parser


def _add_store_commands(sub) -> None:
    """The commands that read a store: status, verify, results, report, export."""
    status = sub.add_parser("status", help="finished / running / missing trials per sweep")
    status.add_argument("storage", nargs="?", default=DEFAULT_STORAGE)
    status.add_argument("-v", "--verbose", action="store_true", help="list every trial")
    status.add_argument("--watch", type=float, nargs="?", const=5.0, metavar="SECONDS",
                        help="refresh the counts every SECONDS (default 5) until Ctrl-C")
    status.set_defaults(func=_cmd_status)

    verify = sub.add_parser("verify", help="check every stored file against its checksum (--repair: move damaged "
                                           "artifacts aside to be recomputed)")
    verify.add_argument("storage", nargs="?", default=DEFAULT_STORAGE)
    verify.add_argument("--repair", action="store_true", help="move damaged artifacts to .broken/")
    verify.add_argument("-v", "--verbose", action="store_true", help="list intact artifacts too")
    verify.set_defaults(func=_cmd_verify)

    results = sub.add_parser("results", help="one row per finished result")
    results.add_argument("storage", nargs="?", default=DEFAULT_STORAGE)
    results.add_argument("--format", choices=["csv", "md", "json", "parquet"], default="md")
    results.add_argument("--out", metavar="FILE",
                         help="write to FILE instead of stdout (parquet: required on a terminal)")
    results.add_argument("--history", action="store_true",
                         help="one row per evaluation of every training (step, epoch, losses, test_acc)")
    results.add_argument("--sweep", help="only this sweep")
    results.set_defaults(func=_cmd_results)

    report = sub.add_parser("report", help="table and plots of accuracy vs sparsity")
    report.add_argument("storage", nargs="?", default=DEFAULT_STORAGE)
    report.add_argument("--out", default="raylth-report", help="output folder (default: raylth-report)")
    report.add_argument("--sweep", help="only this sweep")
    report.set_defaults(func=_cmd_report)

    export = sub.add_parser("export", help="write a ticket (mask, rewind-point weights, recipe) as a plain "
                                           "PyTorch file")
    export.add_argument("ticket", metavar="TICKET_ID", help="an artifact holding a mask: an imp level or a "
                                                            "random_prune/reinit branch (ids: raylth results)")
    export.add_argument("--out", help="the file to write (default: TICKET_ID.pt)")
    export.add_argument("--storage", default=DEFAULT_STORAGE, help=f"storage root (default: {DEFAULT_STORAGE})")
    export.add_argument("--data-root", help="folder holding the data set, read for its shape and normalisation "
                                            "(default: $RAYLTH_DATA, else ./data)")
    export.add_argument("--prune-form", action="store_true", help="state dict as torch.nn.utils.prune keeps it "
                                                                  "(<module>.weight_orig + weight_mask)")
    export.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    export.set_defaults(func=_cmd_export)


def main(argv=None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # overrides after an option (run s.yaml --dry-run a=1): argparse leaves them over
        if args.command == "run" and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
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
    except BrokenPipeError:  # output piped into head and the like
        sys.stderr.close()
        return 0
    except OSError as err:  # a storage or output fault outside a run (a run reports its own)
        where = f"{err.filename}: " if err.filename else ""
        print(f"raylth: error: {where}{err.strerror or err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
