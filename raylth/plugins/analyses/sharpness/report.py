"""The sharpness section of ``raylth report``: sharpness.md and the
curvature of each method's pruned weights against sparsity.

Two views of the same split. |diag| shares (the first table, and
``pruned_curvature_*.png``) are what raylth reported first; Hutchinson
estimates are noisy per weight and |noise| adds up, so they are kept for
comparison only. The signed sums with their standard errors over probe groups
(the second table, ``pruned_signed_curvature_*.png`` with error bars, and the
differences between methods) are the measurement: a difference counts only
beyond its error.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

from raylth.reporting.axes import pyplot, save_axes
from raylth.reporting.sections import group_name, group_title, report_section
from raylth.plugins.analyses.sharpness.specs import SharpnessSpec
from raylth.store import Store


def sharpness_masks(store: Store, rows):
    """One row per (sharpness artifact, mask): the network's curvature, the
    share of its |Hessian diagonal| on the weights the mask prunes, and that
    share over the share of weights pruned (``relative``: 1 = average curvature)."""
    import pandas as pd

    nan, out = float("nan"), []
    for row in rows.itertuples():
        artifact = store.get(row.id)
        if artifact is None:
            continue
        m = artifact.metrics
        for ref, mass in (m.get("masks") or {"-": None}).items():
            total = mass["total"] if mass else None
            count = total["kept_count"] + total["pruned_count"] if total else 0
            mask = store.get(ref) if total else None
            out.append({"sweep": row.sweep, "dataset": row.dataset, "model": row.model, "method": row.method,
                        "seed": row.seed, "network": f"{m['network']}:{m['checkpoint']}", "mask": ref,
                        "level": mask.metrics.get("level", nan) if mask else nan,
                        "sparsity": total["pruned_count"] / count if total else nan,
                        "pruned_share": total["pruned_mass"] / total["total_mass"] if total else nan,
                        "top_eigenvalue": m["top_eigenvalue"], "trace": m["trace_estimate"]})
    frame = pd.DataFrame(out, columns=["sweep", "dataset", "model", "method", "seed", "network", "mask", "level",
                                       "sparsity", "pruned_share", "top_eigenvalue", "trace"])
    return frame.assign(relative=frame.pruned_share / frame.sparsity)


def signed_rows(store: Store, rows):
    """One row per (sharpness artifact, mask) that has signed sums: the mean
    signed Hessian diagonal per pruned and per kept weight, each ± its
    standard error (estimator noise: the spread over probe groups)."""
    import pandas as pd

    out = []
    for row in rows.itertuples():
        artifact = store.get(row.id)
        m = artifact.metrics if artifact is not None else {}
        for ref, split in (m.get("signed") or {}).items():
            t = split["total"]
            mask = store.get(ref)
            out.append({"sweep": row.sweep, "dataset": row.dataset, "model": row.model, "method": row.method,
                        "seed": row.seed, "level": mask.metrics.get("level") if mask else None,
                        "sparsity": t["pruned"]["count"] / (t["pruned"]["count"] + t["kept"]["count"]),
                        "pruned": t["pruned"]["sum"] / t["pruned"]["count"],
                        "pruned_se": t["pruned"]["se"] / t["pruned"]["count"],
                        "kept": t["kept"]["sum"] / t["kept"]["count"], "kept_se": t["kept"]["se"] / t["kept"]["count"],
                        "pruned_groups": [v / t["pruned"]["count"] for v in t["pruned"].get("groups", [])],
                        "hessian": m.get("hessian"), "bn": m.get("bn"), "exact": m.get("exact")})
    return pd.DataFrame(out, columns=["sweep", "dataset", "model", "method", "seed", "level", "sparsity", "pruned",
                                      "pruned_se", "kept", "kept_se", "pruned_groups", "hessian", "bn", "exact"])


def _over_seeds(signed):
    """Per method and level: the mean over seeds, its estimator error
    (sqrt(sum se^2) / n) and the number of seeds."""
    keys = ["sweep", "dataset", "model", "method", "level"]
    out = signed.groupby(keys, dropna=False).agg(
        sparsity=("sparsity", "mean"), pruned=("pruned", "mean"), kept=("kept", "mean"), seeds=("seed", "nunique"),
        pruned_se=("pruned_se", lambda s: math.sqrt((s ** 2).sum()) / len(s)),
        kept_se=("kept_se", lambda s: math.sqrt((s ** 2).sum()) / len(s))).reset_index()
    return out


def signed_table(signed) -> str:
    lines = ["| sweep | method | level | sparsity | mean diag of pruned weights ± se | mean diag of kept weights ± se "
             "| seeds |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in _over_seeds(signed).sort_values(["sweep", "method", "level"]).itertuples():
        lines.append(f"| {r.sweep or '-'} | {r.method} | {r.level:.0f} | {100 * r.sparsity:.1f}% | "
                     f"{r.pruned:.4g} ± {r.pruned_se:.2g} | {r.kept:.4g} ± {r.kept_se:.2g} | {r.seeds} |")
    return "\n".join(lines) + "\n"


def paired_t(differences: list[float], alpha: float = 0.05) -> dict:
    """Student's paired t-test of per-seed differences between two methods:
    the seeds are the replicates (n - 1 degrees of freedom); the probe noise
    of one seed's Hessian is not the error of a difference between methods."""
    from scipy import stats

    n = len(differences)
    mean = sum(differences) / n
    if n < 2:
        return {"n": n, "mean": mean, "se": None, "t": None, "df": 0, "p": None, "differ": None}
    sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1))
    se = sd / math.sqrt(n)
    t = mean / se if se > 0 else math.copysign(math.inf, mean) if mean else 0.0
    p = float(2 * stats.t.sf(abs(t), n - 1)) if se > 0 else (0.0 if mean else 1.0)
    return {"n": n, "mean": mean, "se": se, "t": t, "df": n - 1, "p": p, "differ": p < alpha}


def verdict_cells(test: dict) -> str:
    """``mean ± se | t (df) | p | differ`` cells of a paired test (one seed: no verdict)."""
    if test["se"] is None:
        return f"{test['mean']:.3g} | - | - | n/a: 1 seed (seeds are the replicates)"
    t = f"{test['t']:.2f}" if math.isfinite(test["t"]) else "inf"
    return (f"{test['mean']:.3g} ± {test['se']:.2g} | {t} ({test['df']}) | {test['p']:.3g} | "
            f"{'yes' if test['differ'] else 'no'}")


VERDICT_HEAD = "| t (df) | p | differ (p < 0.05) | seeds |"


def _method_pairs(group, value):
    """Each pair of methods in ``group`` with the per-seed values of ``value`` (row -> float) both have."""
    by_method = {m: {r.seed: value(r) for r in g.itertuples()} for m, g in group.groupby("method")}
    for a, b in itertools.combinations(sorted(by_method), 2):
        seeds = sorted(set(by_method[a]) & set(by_method[b]))
        if seeds:
            yield a, b, [by_method[a][s] - by_method[b][s] for s in seeds]


def differences(signed) -> str:
    """Each pair of methods at each level: the difference of their pruned
    weights' mean signed curvature (masks of one seed split that seed's
    Hessian), paired by seed, Student's t over the seeds."""
    lines = ["| sweep | level | methods | difference of pruned-weight curvature ± se " + VERDICT_HEAD,
             "|---|---:|---|---:|---|---:|---|---:|"]
    for (sweep, level), group in signed.groupby(["sweep", "level"], dropna=False):
        for a, b, diffs in _method_pairs(group, lambda r: r.pruned):
            lines.append(f"| {sweep or '-'} | {level:.0f} | {a} - {b} | {verdict_cells(paired_t(diffs))} | "
                         f"{len(diffs)} |")
    return "\n".join(lines) + "\n"


def own_rows(store: Store, rows):
    """One row per sharpness artifact of a network's own Hessian (no masks, or
    its own mask: ``network: own``): the diagonal's sum over the weights the
    network has, its mean per such weight, and the top eigenvalue."""
    import pandas as pd

    out = []
    for row in rows.itertuples():
        artifact = store.get(row.id)
        m = artifact.metrics if artifact is not None else {}
        masks = list(m.get("masks") or {})
        if not m or (masks and masks != [m["network"]]) or m.get("weights") is None:
            continue
        out.append({"sweep": row.sweep, "dataset": row.dataset, "model": row.model, "method": row.method,
                    "seed": row.seed, "level": m["level"], "sparsity": m["sparsity"], "checkpoint": m["checkpoint"],
                    "trace": m["trace_estimate"], "weights": m["weights"],
                    "mean": m["trace_estimate"] / m["weights"], "top": m["top_eigenvalue"]})
    return pd.DataFrame(out, columns=["sweep", "dataset", "model", "method", "seed", "level", "sparsity", "checkpoint",
                                      "trace", "weights", "mean", "top"])


def own_table(own) -> str:
    lines = ["| sweep | method | level | sparsity | network | Hessian-diagonal trace (its weights) | mean per weight "
             "| top eigenvalue | seeds |", "|---|---|---:|---:|---|---:|---:|---:|---:|"]
    keys = ["sweep", "method", "level", "checkpoint"]
    for (sweep, method, level, checkpoint), g in own.groupby(keys, dropna=False):
        def cell(col, form="{:.4g}"):
            spread = g[col].std(ddof=1) if len(g) > 1 else 0.0
            return f"{form.format(g[col].mean())} ± {form.format(spread)}"
        lines.append(f"| {sweep or '-'} | {method} | {level} | {100 * g.sparsity.mean():.1f}% | {checkpoint} | "
                     f"{cell('trace')} | {cell('mean')} | {cell('top')} | {g.seed.nunique()} |")
    return "\n".join(lines) + "\n"


def own_differences(own) -> str:
    """Each pair of methods at each level, per statistic: paired by seed, Student's t."""
    lines = ["| sweep | level | statistic | methods | difference ± se " + VERDICT_HEAD,
             "|---|---:|---|---|---:|---|---:|---|---:|"]
    for (sweep, level, _), group in own.groupby(["sweep", "level", "checkpoint"], dropna=False):
        for statistic, column in (("mean diagonal per weight", "mean"), ("top eigenvalue", "top")):
            for a, b, diffs in _method_pairs(group, lambda r, c=column: getattr(r, c)):
                lines.append(f"| {sweep or '-'} | {level} | {statistic} | {a} - {b} | "
                             f"{verdict_cells(paired_t(diffs))} | {len(diffs)} |")
    return "\n".join(lines) + "\n"


def plot_signed_curvature(signed, path: Path, title: str) -> None:
    """Mean signed Hessian diagonal of the weights each method prunes, against
    sparsity, with the estimator's standard error as error bars."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, group in _over_seeds(signed).groupby("method"):
        group = group.sort_values("sparsity")
        ax.errorbar(100 * group.sparsity, group.pruned, yerr=group.pruned_se, marker="o", markersize=3, capsize=3,
                    label=method)
    ax.axhline(0.0, color="grey", linewidth=1)
    _finish(plt, fig, ax, path, title, "mean Hessian diagonal of pruned weights\n(± standard error of the estimate)")


def _finish(plt, fig, ax, path: Path, title: str, ylabel: str) -> None:
    save_axes(plt, fig, ax, path, title, xlabel="weights pruned (%)", ylabel=ylabel)


def sharpness_table(masks) -> str:
    def shown(value, form: str) -> str:  # NaN: a dense network's row has no mask
        return "-" if value != value else form.format(value)

    lines = ["| sweep | method | seed | network | mask level | mask sparsity | "
             "share of \\|diag\\| on pruned weights | relative curvature of pruned weights | top eigenvalue | "
             "Hessian-diagonal trace |", "|---|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in masks.sort_values(["sweep", "method", "seed", "sparsity"], na_position="first").itertuples():
        lines.append(f"| {r.sweep or '-'} | {r.method} | {r.seed} | {r.network} | {shown(r.level, '{:.0f}')} | "
                     f"{shown(100 * r.sparsity, '{:.1f}%')} | {shown(100 * r.pruned_share, '{:.1f}%')} | "
                     f"{shown(r.relative, '{:.3f}')} | {r.top_eigenvalue:.4g} | {r.trace:.4g} |")
    return "\n".join(lines) + "\n"


def plot_pruned_curvature(masks, path: Path, title: str) -> None:
    """How curved the weights each method prunes are, relative to the average
    weight: (share of |Hessian diagonal| on pruned weights) / (share of weights
    pruned), against sparsity. 1: as curved as the average; above: sharper."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1, label="as curved as the average weight")
    for method, group in masks.groupby("method"):
        stats = group.groupby("level").agg(sparsity=("sparsity", "mean"), mean=("relative", "mean"),
                                           std=("relative", "std")).fillna(0.0)
        line, = ax.plot(100 * stats.sparsity, stats["mean"], marker="o", markersize=3, label=method)
        ax.fill_between(100 * stats.sparsity, stats["mean"] - stats["std"], stats["mean"] + stats["std"],
                        color=line.get_color(), alpha=0.2)
    _finish(plt, fig, ax, path, title, "mean |Hessian diagonal| of pruned weights\n/ mean over all weights")


@report_section
def sharpness_section(store: Store, frame, out: Path) -> dict[str, Path]:
    sharp = frame[frame.stage == SharpnessSpec.kind]
    if sharp.empty:
        return {}
    masks = sharpness_masks(store, sharp)
    text = "# Sharpness\n\n" + sharpness_table(masks)
    signed = signed_rows(store, sharp)
    signed = signed[signed.level.notna()]
    written = {"sharpness": out / "sharpness.md"}
    if not signed.empty:
        text += ("\n## Signed Hessian diagonal, with standard errors\n\n"
                 "Mean over seeds; the error is the estimator's (the spread of each sum over groups of "
                 "probes), combined over seeds.\n\n" + signed_table(signed)
                 + "\n## Do the methods differ?\n\n" + differences(signed))
        for keys, rows in signed.groupby(["sweep", "dataset", "model"], dropna=False):
            path = out / f"pruned_signed_curvature_{group_name(keys)}.png"
            plot_signed_curvature(rows, path, f"{group_title(keys)}: pruned weights")
            written[f"plot:{path.stem}"] = path
    own = own_rows(store, sharp)
    if not own.empty:
        text += ("\n## Each network's own Hessian\n\nThe Hessian of every network at its checkpoint (final: "
                 "trained), over the weights it has (a sparse network's pruned weights do not exist), on the fixed "
                 "batches; mean ± std over seeds.\n\n" + own_table(own)
                 + "\n## Do the methods' networks differ?\n\nPer level, each pair of methods, paired by seed; "
                 "Student's t over the seeds.\n\n" + own_differences(own))
    (out / "sharpness.md").write_text(text)
    for keys, rows in masks[masks.sparsity.notna()].groupby(["sweep", "dataset", "model"], dropna=False):
        path = out / f"pruned_curvature_{group_name(keys)}.png"
        plot_pruned_curvature(rows, path, f"{group_title(keys)}, curvature on pruned weights")
        written[f"plot:{path.stem}"] = path
    return written
