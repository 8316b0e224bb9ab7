"""Tables, JSON and plots of the reproduction benchmark (from the runs' ``eval.json``)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.eval import format_table
from agents.mechanism import MECHANISM_KEYS

from .probing import PROBE_NAMES, TASKS
from .profiles import PAIRS, Profile, parse_row

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Version of ``results.json``: 2 stamps each run with its identity (:func:`~.profiles.run_identity`);
#: files without ``format`` (1: row fingerprints) are converted once by ``benchmarks/upgrade_results.py``.
RESULTS_FORMAT = 2

__all__ = [
    "curves_figure",
    "mechanism_summary",
    "paired_differences",
    "pairs_figure",
    "record_figures",
    "summarise",
    "write_outputs",
]


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def _order(rows: list[str]) -> list[str]:
    first = ["random", "supervised"] + [m for pair in PAIRS for m in pair]
    return [r for r in first if r in rows] + sorted(r for r in rows if r not in first)


def summarise(evals: list[dict[str, Any]], tasks: tuple[str, ...]) -> dict[str, Any]:
    """``{row: {task: {probe: {mean, std, n, values}, "chance": mean, "metric"}}}`` (scores as fractions)."""
    out: dict[str, Any] = {}
    for row in _order(sorted({e["row"] for e in evals})):
        runs = [e for e in evals if e["row"] == row]
        out[row] = {}
        for task in tasks:
            results = [e["final"][task] for e in runs if task in e.get("final", {})]
            if not results:
                continue
            metric = results[0]["metric"]
            cell: dict[str, Any] = {"metric": metric}
            for probe in PROBE_NAMES:
                vals = [r[probe][metric] for r in results if probe in r]
                if vals:
                    mean, std = _mean_std(vals)
                    cell[probe] = {"mean": mean, "std": std, "n": len(vals), "values": vals}
            chances = [r["chance"] for r in results if r.get("chance") is not None]
            cell["chance"] = _mean_std(chances)[0] if chances else None
            not_run = sorted({probe for r in results for probe in r.get("not_run", {})})
            if not_run:
                cell["not_run"] = not_run
            out[row][task] = cell
    return out


def mechanism_summary(evals: list[dict[str, Any]]) -> dict[str, Any]:
    """``{row: {key: {mean, std, n}}}`` of the final mechanism metrics (:mod:`agents.mechanism`) of
    each trained row (NaN values, e.g. a base row's AB metrics, are left out)."""
    out: dict[str, Any] = {}
    for row in _order(sorted({e["row"] for e in evals})):
        finals = [(e.get("mechanism") or {}).get("final") for e in evals if e["row"] == row]
        finals = [f for f in finals if f]
        cells = {}
        for key in MECHANISM_KEYS:
            vals = [f[key] for f in finals if isinstance(f.get(key), (int, float)) and f[key] == f[key]]
            if vals:
                mean, std = _mean_std(vals)
                cells[key] = {"mean": mean, "std": std, "n": len(vals)}
        if cells:
            out[row] = cells
    return out


def _mechanism_table(mech: dict[str, Any]) -> str:
    if not mech:
        return ""
    header = "| row | " + " | ".join(MECHANISM_KEYS) + " |"
    lines = [header, "|" + " --- |" * (len(MECHANISM_KEYS) + 1)]
    for row, cells in mech.items():
        vals = [
            f"{cells[k]['mean']:.3f} ± {cells[k]['std']:.3f}" if k in cells else "-" for k in MECHANISM_KEYS
        ]
        lines.append(f"| {row} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def _pair_table(summary: dict[str, Any], tasks: tuple[str, ...]) -> str:
    lines = [
        "| pair | task | probe | base | AB | AB - base | beats base by > 1 base std | AB std <= base std |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    found = False
    for base, ab in PAIRS:
        if base not in summary or ab not in summary:
            continue
        for task in tasks:
            b, a = summary[base].get(task), summary[ab].get(task)
            if not b or not a:
                continue
            for probe in PROBE_NAMES:
                if probe not in b or probe not in a:
                    continue
                found = True
                pb, pa = b[probe], a[probe]
                diff = 100 * (pa["mean"] - pb["mean"])
                few = pb["n"] < 2 or pa["n"] < 2
                beats = "n/a" if few else "yes" if pa["mean"] - pb["mean"] > pb["std"] else "no"
                robust = "n/a" if few else "yes" if pa["std"] <= pb["std"] else "no"
                lines.append(
                    f"| {ab} vs {base} | {task} | {probe} | {100 * pb['mean']:.1f} ± {100 * pb['std']:.1f} "
                    f"(n={pb['n']}) | {100 * pa['mean']:.1f} ± {100 * pa['std']:.1f} (n={pa['n']}) | "
                    f"{diff:+.1f} | {beats} | {robust} |"
                )
    return "\n".join(lines) if found else ""


def _comparisons(rows: list[str]) -> list[tuple[str, str]]:
    """``(row, reference)`` pairs: each AB row against its base, and an ablation also against its AB row."""
    out = []
    for row in _order(rows):
        spec = parse_row(row)
        if spec.method is None or not spec.method.startswith("ab"):
            continue
        refs = [spec.base] + ([spec.method] if row != spec.method else [])
        out += [(row, ref) for ref in refs if ref in rows]
    return out


def paired_differences(evals: list[dict[str, Any]], tasks: tuple[str, ...]) -> dict[str, Any]:
    """AB minus its base run by run, matched on (seed, ordering): both share the initial encoder and the
    data order, so the paired difference removes what the seed and the ordering do to both alike.

    An ablation row (``abdino-v2``) is compared with its base (``dino``) and with its AB row
    (``abdino``), where those rows have runs.

    Returns:
        ``{"<ab> vs <base>": {task: {probe: {mean, std, n, wins, diffs}}}}``: scores as fractions;
        ``wins`` counts the matched runs where the first row scored strictly higher.
    """
    by_key = {(e["row"], e["seed"], e["ordering"]): e for e in evals}
    out: dict[str, Any] = {}
    for ab, base in _comparisons(sorted({e["row"] for e in evals})):
        keys = sorted((s, o) for r, s, o in by_key if r == ab and (base, s, o) in by_key)
        if not keys:
            continue
        pair: dict[str, Any] = {}
        for task in tasks:
            cells: dict[str, Any] = {}
            for probe in PROBE_NAMES:
                diffs = []
                for seed, ordering in keys:
                    sa = _score(by_key[(ab, seed, ordering)], task, probe)
                    sb = _score(by_key[(base, seed, ordering)], task, probe)
                    if sa is not None and sb is not None:
                        diffs.append(sa - sb)
                if diffs:
                    mean, std = _mean_std(diffs)
                    wins = sum(d > 0 for d in diffs)
                    cells[probe] = {"mean": mean, "std": std, "n": len(diffs), "wins": wins, "diffs": diffs}
            if cells:
                pair[task] = cells
        out[f"{ab} vs {base}"] = pair
    return out


def _paired_table(paired: dict[str, Any]) -> str:
    lines = [
        "| pair | task | probe | AB - base, paired (mean ± std) | n | AB ahead |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for pair, tasks in paired.items():
        for task, probes in tasks.items():
            for probe, c in probes.items():
                lines.append(
                    f"| {pair} | {task} | {probe} | {100 * c['mean']:+.1f} ± {100 * c['std']:.1f} "
                    f"| {c['n']} | "
                    f"{c['wins']} of {c['n']} |"
                )
    return "\n".join(lines) if len(lines) > 2 else ""


def _curve_points(
    evals: list[dict[str, Any]], steps: int, batch_size: int, tasks: Sequence[str], probes: Sequence[str]
) -> dict[str, dict[str, dict[int, list[float]]]]:
    """``{row: {task/probe: {images_seen: [score per run]}}}``, step 0 from the seed's random row and
    ``steps`` (the last) from each run's final scores."""
    random = {e["seed"]: e for e in evals if e["row"] == "random"}
    out: dict[str, Any] = {}
    for e in evals:
        if e["row"] == "random":
            continue
        row = out.setdefault(e["row"], {})
        points = {int(s): r for s, r in e.get("curve", {}).items()}
        points[steps] = e.get("final", {})
        if e["seed"] in random:
            points[0] = random[e["seed"]].get("final", {})
        for step, results in points.items():
            for task in tasks:
                res = results.get(task)
                for probe in probes:
                    if res and probe in res:
                        key = f"{task}/{probe}"
                        score = res[probe][res["metric"]]
                        row.setdefault(key, {}).setdefault(step * batch_size, []).append(score)
    return out


def run_times(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean seconds per run of each row: ``training`` (the last training call's wall time; a resumed
    run counts only its last part) and ``probing`` (the final probes of the three tasks, probe-view
    rendering excluded), each with the number of runs that recorded it."""
    out: dict[str, dict[str, Any]] = {}
    for row in _order(list(dict.fromkeys(r["row"] for r in runs))):
        mine = [r for r in runs if r["row"] == row]
        train = [
            r["train"]["wall_s_last_call"] for r in mine if (r.get("train") or {}).get("wall_s_last_call")
        ]
        probe = [
            sum(t["wall_s"] for t in final.values())
            for r in mine
            if (final := (r.get("eval") or {}).get("final")) and all("wall_s" in t for t in final.values())
        ]
        out[row] = {
            "training_s": _mean_std(train)[0] if train else None,
            "training_n": len(train),
            "probing_s": _mean_std(probe)[0] if probe else None,
            "probing_n": len(probe),
        }
    return out


def _times_table(times: dict[str, dict[str, Any]]) -> str:
    def cell(mean: float | None, n: int) -> str:
        return "-" if mean is None else f"{mean:.1f} (n={n})"

    lines = ["| row | training s | probing s |", "|---|---|---|"]
    for row, t in times.items():
        lines.append(
            f"| {row} | {cell(t['training_s'], t['training_n'])} | {cell(t['probing_s'], t['probing_n'])} |"
        )
    return "\n".join(lines)


#: Figure labels of the tasks, probes and metrics.
TASK_LABELS = {"scene": "scene task", "region": "region task", "heldout": "held-out task"}
PROBE_LABELS = {"linear": "linear probe", "knn": "k-NN probe", "attentive": "attention-pooling probe"}
METRIC_LABELS = {"top1": "top-1 accuracy", "map": "mAP"}
#: The reference lines of every panel: label, line style and colour.
REFERENCE_LINES = {
    "random": ("random-init floor", ":", "0.3"),
    "supervised": ("supervised ceiling", "--", "0.3"),
    "chance": ("chance", "-.", "tab:red"),
}


def _score(e: dict[str, Any], task: str, probe: str) -> float | None:
    """A run's final score of ``task`` with ``probe`` (None where it has none)."""
    res = e.get("final", {}).get(task, {})
    return res[probe][res["metric"]] if probe in res else None


def _metric(summary: dict[str, Any], task: str) -> str | None:
    return next((cells[task]["metric"] for cells in summary.values() if task in cells), None)


def _panel(ax: Any, summary: dict[str, Any], task: str, probe: str) -> None:
    """Title (``"region task, attention-pooling probe"``), the metric on the y axis and the reference
    lines of ``task`` and ``probe`` that the summary holds: the random-init floor and the supervised
    ceiling (those rows' means) and chance (the task's), labelled as in :data:`REFERENCE_LINES`.

    Chance far below everything else would squash the panel: the axis then stops above it and the
    title gives its value (the line is still there, off the visible range).
    """
    metric = _metric(summary, task)
    title = f"{TASK_LABELS.get(task, task)}, {PROBE_LABELS.get(probe, probe)}"
    ax.set_ylabel(f"{METRIC_LABELS.get(metric or '', metric or 'score')} (%)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3, axis="y")
    lo, hi = ax.get_ylim()
    for ref in ("random", "supervised"):
        cell = summary.get(ref, {}).get(task, {}).get(probe)
        if cell:
            label, style, colour = REFERENCE_LINES[ref]
            ax.axhline(100 * cell["mean"], color=colour, linestyle=style, linewidth=1.2, label=label)
            lo, hi = min(lo, 100 * cell["mean"]), max(hi, 100 * cell["mean"])
    chance = next(
        (c[task]["chance"] for c in summary.values() if c.get(task, {}).get("chance") is not None), None
    )
    if chance is not None:
        label, style, colour = REFERENCE_LINES["chance"]
        ax.axhline(100 * chance, color=colour, linestyle=style, linewidth=1.2, label=label)
        if 100 * chance < lo - 0.5 * (hi - lo):
            title += f"\n(chance {100 * chance:.1f} %, below the axis)"
        else:
            lo = min(lo, 100 * chance)
    pad = 0.05 * ((hi - lo) or 1.0)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_title(title, fontsize=9)


def _legend(fig: Any, axes: list[Any], columns: int) -> None:
    """One legend below the panels with every label of ``axes`` once."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(
            list(handles.values()),
            list(handles),
            loc="outside lower center",
            ncol=min(len(handles), columns),
            fontsize=8,
            frameon=False,
        )


def curves_figure(
    summary: dict[str, Any],
    evals: list[dict[str, Any]],
    title: str,
    *,
    steps: int,
    batch_size: int,
    tasks: Sequence[str],
    probes: Sequence[str],
) -> Figure | None:
    """Score against images seen (``step * batch_size``; the final scores at ``steps``) of each
    trained row (mean ± std band over its runs), a panel per task of ``tasks`` and probe of
    ``probes``, with the reference lines of :func:`_panel`; None without curve points.

    A :class:`matplotlib.figure.Figure` made without pyplot (save it with ``savefig``).
    """
    from matplotlib.figure import Figure

    curves = _curve_points(evals, steps, batch_size, tasks, probes)
    keys = [(t, p) for t in tasks for p in probes]
    if not curves or not keys:
        return None
    fig = Figure(figsize=(4.2 * len(keys), 4.2), layout="constrained")
    axes = list(fig.subplots(1, len(keys), squeeze=False)[0])
    for ax, (task, probe) in zip(axes, keys, strict=True):
        for row, series in curves.items():
            pts = sorted(series.get(f"{task}/{probe}", {}).items())
            if not pts:
                continue
            xs = [x for x, _ in pts]
            stats = [_mean_std(v) for _, v in pts]
            ys = [100 * m for m, _ in stats]
            lows = [100 * (m - s) for m, s in stats]
            highs = [100 * (m + s) for m, s in stats]
            (line,) = ax.plot(xs, ys, marker="o", markersize=4, label=row)
            ax.fill_between(xs, lows, highs, alpha=0.15, color=line.get_color())
        _panel(ax, summary, task, probe)
        ax.set_xlabel("images seen in pre-training", fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"{title}\nprobe score of the frozen encoder against images seen (mean ± std over runs; "
        "0 = the random init)",
        fontsize=9,
    )
    _legend(fig, axes, columns=6)
    return fig


def pairs_figure(summary: dict[str, Any], evals: list[dict[str, Any]], title: str) -> Figure | None:
    """Each AB row beside its base (and an ablation beside its AB row), a panel per task and probe: a
    dot per run, a line joining the two runs of the same seed and ordering (green where the right row
    scored higher, red where lower), mean ± std bars, and the reference lines of :func:`_panel`; None
    without such a pair. A :class:`matplotlib.figure.Figure` made without pyplot.
    """
    from matplotlib.figure import Figure

    pairs = _comparisons(sorted({e["row"] for e in evals}))
    tasks = [t for t in TASKS if any(t in cells for cells in summary.values())]
    if not pairs or not tasks:
        return None
    width = max(3.6, 1.5 * len(pairs) + 1.2)
    fig = Figure(figsize=(width * len(PROBE_NAMES), 3.3 * len(tasks) + 0.8), layout="constrained")
    grid = fig.subplots(len(tasks), len(PROBE_NAMES), squeeze=False)
    for i, task in enumerate(tasks):
        for j, probe in enumerate(PROBE_NAMES):
            ax = grid[i][j]
            for k, (ab, base) in enumerate(pairs):
                scores = {}
                for dx, row, colour in ((-0.2, base, "tab:blue"), (0.2, ab, "tab:orange")):
                    runs = {
                        (e["seed"], e["ordering"]): s
                        for e in evals
                        if e["row"] == row and (s := _score(e, task, probe)) is not None
                    }
                    scores[dx] = runs
                    if not runs:
                        continue
                    vals = [100 * v for v in runs.values()]
                    ax.scatter([k + dx] * len(vals), vals, s=14, color=colour, zorder=3, label="one run")
                    mean, std = _mean_std(vals)
                    ax.errorbar(
                        k + 2 * dx,
                        mean,
                        yerr=std,
                        fmt="_",
                        markersize=12,
                        color=colour,
                        capsize=4,
                        label="mean ± std",
                    )
                for key in sorted(set(scores[-0.2]) & set(scores[0.2])):
                    left, right = 100 * scores[-0.2][key], 100 * scores[0.2][key]
                    ahead = right > left
                    ax.plot(
                        [k - 0.2, k + 0.2],
                        [left, right],
                        color="tab:green" if ahead else "tab:red",
                        alpha=0.7,
                        linewidth=1,
                        label=f"same seed and ordering, right row {'higher' if ahead else 'not higher'}",
                    )
            _panel(ax, summary, task, probe)
            ticks = [k + dx for k in range(len(pairs)) for dx in (-0.2, 0.2)]
            ax.set_xticks(ticks, [row for ab, base in pairs for row in (base, ab)], fontsize=7)
            ax.set_xlim(-0.6, len(pairs) - 0.4)
    fig.suptitle(
        f"{title}\neach AB row (orange, right) against its base (blue, left); lines join the runs "
        "of the same seed and data ordering",
        fontsize=9,
    )
    _legend(fig, [ax for row in grid for ax in row], columns=4)
    return fig


def _figures(
    summary: dict[str, Any], evals: list[dict[str, Any]], title: str, **curves: Any
) -> dict[str, Figure]:
    """``{"curves": curves_figure(..., **curves), "pairs": pairs_figure(...)}``, those not None."""
    figures = {
        "curves": curves_figure(summary, evals, title, **curves),
        "pairs": pairs_figure(summary, evals, title),
    }
    return {name: fig for name, fig in figures.items() if fig is not None}


def _plots(
    summary: dict[str, Any], evals: list[dict[str, Any]], profile: Profile, out: Path, title: str
) -> list[Path]:
    """Write ``curves.png`` (:func:`curves_figure`) and ``pairs.png`` (:func:`pairs_figure`) under
    ``out``, those there is something to draw for; returns their paths."""
    figures = _figures(
        summary,
        evals,
        title,
        steps=profile.steps,
        batch_size=profile.batch_size,
        tasks=profile.curve_tasks,
        probes=profile.curve_probes,
    )
    written = []
    for name, fig in figures.items():
        written.append(out / f"{name}.png")
        fig.savefig(written[-1], dpi=110)
    return written


def _title(profile_name: str, machine: dict[str, Any]) -> str:
    return f"{profile_name} on {machine['device_name']} ({machine['date'][:10]})"


def record_figures(record: dict[str, Any]) -> dict[str, Figure]:
    """The figures of a ``results.json`` record of this format, as :func:`write_outputs` draws them:
    ``{"curves": ..., "pairs": ...}`` (those there is something to draw for).

    Raises:
        ValueError: the record is of another format.
    """
    if record.get("format") != RESULTS_FORMAT:
        raise ValueError(f"results.json of format {record.get('format', 1)}, not {RESULTS_FORMAT}")
    profile, summary = record["profile"], record["summary"]
    evals = [r["eval"] for r in record["runs"] if r.get("eval")]
    return _figures(
        summary,
        evals,
        _title(profile["name"], record["machine"]),
        steps=profile["train"]["steps"],
        batch_size=profile["train"]["batch_size"],
        tasks=profile["curve_tasks"],
        probes=profile["curve_probes"],
    )


def write_outputs(
    out: Path,
    profile: Profile,
    machine: dict[str, Any],
    runs: list[dict[str, Any]],
    plots: bool = True,
    missing: list[str] | None = None,
) -> dict[str, Path]:
    """Write ``table.md``, ``results.json`` and the plots under ``out``; returns their paths.

    ``missing`` names planned runs that are not finished (they are listed, not silently dropped).
    """
    out.mkdir(parents=True, exist_ok=True)
    evals = [r["eval"] for r in runs if r.get("eval")]
    summary = summarise(evals, profile.tasks)
    stamp = (
        f"profile `{profile.name}` ({profile.images_seen} images seen "
        f"per run: {profile.steps} steps x {profile.batch_size}); machine: {machine['device_name']} "
        f"({machine['device']}), {machine['cpu_count']} CPUs, {machine['torch_threads']} torch threads; "
        f"{machine['date']}; commit {machine['commit']}"
    )
    parts = [
        f"# Reproduction benchmark: {profile.name}",
        "",
        stamp,
        "",
        f"Cells: mean ± sample std over seeds x orderings (planned n = {len(profile.seeds)} x "
        f"{len(profile.orderings)} per trained row; random: seeds only"
        + (f"; {', '.join(profile.first_seed_rows)}: first seed only" if profile.first_seed_rows else "")
        + "), in percent.",
        "",
    ]
    reused: dict[str, int] = {}  # source -> runs
    for r in runs:
        src = (r.get("eval") or {}).get("reused_from")
        if src:
            name = f"{Path(src['file']).parent.name}/{Path(src['file']).name} (commit {src.get('commit')})"
            reused[name] = reused.get(name, 0) + 1
    if reused:
        parts += [
            "Reused from earlier reports (same run identity; each run's `reused_from` in results.json): "
            + ", ".join(f"{n} runs from {name}" for name, n in reused.items())
            + ".",
            "",
        ]
    if missing:
        parts += [
            f"**Not finished, so not in these tables ({len(missing)} runs):** {', '.join(missing)}.",
            "",
        ]
    for task in profile.tasks:
        rows = {
            row: [e["final"][task] for e in evals if e["row"] == row and task in e["final"]]
            for row in summary
        }
        rows = {r: v for r, v in rows.items() if v}
        if rows:
            parts += [f"## {task}: {TASKS[task]}", "", format_table(rows), ""]
    pair_table = _pair_table(summary, profile.tasks)
    if pair_table:
        parts += ["## AB against its base", "", pair_table, ""]
    paired = paired_differences(evals, profile.tasks)
    paired_table = _paired_table(paired)
    if paired_table:
        parts += [
            "## AB minus its base, run by run",
            "",
            "Each AB run minus the base run of the same seed and ordering (same initial encoder, same data "
            "order), in points. An ablation row is also set against its AB row (e.g. `abdino-v2 vs "
            "abdino`).",
            "",
            paired_table,
            "",
        ]
    mech = mechanism_summary(evals)
    mech_table = _mechanism_table(mech)
    if mech_table:
        parts += [
            "## Mechanism metrics (final checkpoint)",
            "",
            "Does the move tell anything, and does Q use it (`agents.mechanism`; nats; mean ± std over runs, "
            "on the same fixed batches of the training scenes for every row): `oracle_info`, the data's "
            "action information with the true per-view annotations; `target_info`, the same for the learned "
            "TD target; `q_gain`, Q's cross-entropy gain from the true move over the average of the moves "
            "from the same view (`q_gain_fraction` = `q_gain / oracle_info`; the target is at least 0.5); "
            "`target_entropy` against `p_ema_entropy`; `grad_cosine`, the cosine between the AB and base "
            "losses' gradients on the encoder, and `grad_ratio`, the weighted AB gradient's norm over the "
            "base's.",
            "",
            mech_table,
            "",
        ]
    maps = sorted((out / "valuemaps").glob("*.png")) if (out / "valuemaps").is_dir() else []
    if maps:
        parts += [
            "## Value maps",
            "",
            "Q(l | whole image, move) of each AB row's first run over a grid of moves, for the annotations "
            "of one held-out scene (`agents.valuemap`; the numbers in the JSON beside each picture): "
            + ", ".join(f"[{m.stem}](valuemaps/{m.name})" for m in maps)
            + ".",
            "",
        ]
    times = run_times(runs)
    parts += [
        "## Time per run",
        "",
        "Mean wall seconds per run on this machine: training (the last training call; a resumed run "
        "counts only its last part) and the final probes of the three tasks (probe-view rendering "
        "excluded; `-` where the runs predate this record).",
        "",
        _times_table(times),
        "",
    ]
    paths = {"table": out / "table.md", "json": out / "results.json"}
    paths["table"].write_text("\n".join(parts))
    record = {
        "machine": machine,
        "format": RESULTS_FORMAT,
        "profile": profile.to_dict(),
        "summary": summary,
        "paired": paired,
        "mechanism": mech,
        "times": times,
        "runs": runs,
        "missing": list(missing or []),
    }
    paths["json"].write_text(json.dumps(record, indent=2, default=list))
    if plots:
        for p in _plots(summary, evals, profile, out, _title(profile.name, machine)):
            paths[p.stem] = p
    return paths
