"""`tfxfer report RESULTS_DIR`: results.csv, Figures 2 and 3, Table 1, the co-adaptation /
specificity decomposition and the findings, as report.md and a self-contained report.html —
all from the result records, never by retraining."""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from tfxfer.atomic import atomic_write_text
from tfxfer.errors import UserError
from tfxfer.report.analysis import (
    CONVERGED_GAIN,
    VERDICT_RULES,
    Grid,
    convergence,
    findings,
    load_records,
    losses,
    per_unit,
    results_csv,
    table1,
    table3,
)
from tfxfer.report.figures import figure2, figure3
from tfxfer.runs.layout import RESULT_FILE


def missing_runs(results_dir: Path, records: list[dict]) -> list[dict]:
    """Planned runs (plan.json, written by `tfxfer experiment`) that have no result record."""
    plan = results_dir / "plan.json"
    if not plan.is_file():
        return []
    have = {r["run_id"] for r in records}
    return [p for p in json.loads(plan.read_text()) if p["run_id"] not in have]


def _est(e) -> str:
    return "not run" if e is None else f"{e.text()} (units {e.units}, runs {e.runs}" + (
        f", p = {e.p:.3g})" if e.p is not None else ")")


def _acc(e) -> str:
    if e is None:
        return "—"
    return f"{100 * e.mean:.1f}" + (f" ± {100 * (e.hi - e.lo) / 2:.1f}" if e.lo is not None else " (1 seed)")


def per_unit_lines(grid: Grid) -> list[str]:
    rows = per_unit(grid)
    if not rows:
        return []
    lines = ["", "## Per split: top-1 − the target's base net, points", "",
             "| split | seed | target task (classes) | base top-1 | treatment | " +
             " | ".join(grid.n_label(n) for n in range(1, grid.n_max + 1)) + " |",
             "|---|---|---|---|---|" + "---|" * grid.n_max]
    for row in rows:
        base = "—" if row["base"] is None else f"{row['base']:.3f}"
        for treatment, diffs in row["diffs"].items():
            cells = ["—" if diffs.get(n) is None else f"{100 * diffs[n]:+.1f}" for n in range(1, grid.n_max + 1)]
            lines.append(f"| {row['split']} | {row['seed']} | {row['target']} ({', '.join(row['classes'])}) | "
                         f"{base} | {treatment} | " + " | ".join(cells) + " |")
    return lines


def convergence_lines(records: list[dict]) -> list[str]:
    rows = convergence(records)
    if not rows:
        return []
    lines = ["", "## Convergence of the base nets", "",
             (f"Validation top-1 of the last epochs; converged when the same recipe run with twice the epochs "
              f"(the equal-training control) ends less than {100 * CONVERGED_GAIN:g} point higher. "
              "The same gain in test top-1 stands beside it and does not decide the flag. "
              "\"not measured\": no such run for this base net."), "",
             ("| base net | split | epochs | test top-1 | val top-1, last epochs | 2× run: epochs, val top-1 | val top-1 gain "
              "| test top-1 gain | converged |"),
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        split = r["split"] + (f" {r['split_seed']}" if r["split_seed"] is not None else "")
        last = ", ".join(f"{v:.3f}" for v in r["val_top1_last"]) or "—"
        # A run without validation images (val_fraction 0) has no validation top-1 to judge by.
        long_val = "no validation" if r["long_val_top1"] is None else f"{r['long_val_top1']:.3f}"
        long = "—" if r["long_run_id"] is None else f"{r['long_epochs']}, {long_val}"
        # Two decimals: the flag's 0.5-point line must not hide in rounding (+0.48 reads "yes").
        gain, test_gain = ("—" if g is None else f"{100 * g:+.2f}" for g in (r["gain"], r["test_gain"]))
        flag = "not measured" if r["converged"] is None else ("yes" if r["converged"] else "no")
        lines.append(f"| {r['run_id']} | {split} | {r['epochs']} | {r['top1']:.3f} | {last} | {long} | {gain} | {test_gain} | {flag} |")
    return lines


def table3_lines(records: list[dict]) -> list[str]:
    rows = table3(records)
    if not rows:
        return []
    lines = ["", "## Table 3: architecture variants (Zeiler & Fergus), trained from scratch", "",
             ("Top-1/top-5 accuracy in %, mean ± half-width of the 95 % CI over seeds. Train top-1: the "
              "training images (validation images excluded) as evaluation sees them, without augmentation "
              "or dropout; — where a record predates that measurement."), "",
             "| arch | variant | layers | seeds | train top-1 | test top-1 | test top-5 |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['arch']} | {r['variant']} | {r['description']} | {', '.join(map(str, r['seeds']))} | "
                     f"{_acc(r['train_top1'])} | {_acc(r['top1'])} | {_acc(r['top5'])} |")
    return lines


def health_lines(healths: list[dict]) -> list[str]:
    """The report's conv1 section from diagnose.filters.base_health's summaries."""
    if not healths:
        return []
    lines = ["", "## conv1 filter health of the base networks (Zeiler & Fergus Fig. 6)", "",
             ("Bands by radial frequency r of each filter's 2-D DFT (cycles/pixel): low < 1/6 <= mid < 1/3 <= high. "
              f"Dead: RMS below {healths[0]['dead_norm']:g} x the layer's median (norm test only; "
              "`tfxfer diagnose filters` adds the activation test)."), "",
             "| run | arch | filters | dead | live by dominant band low/mid/high | mean mid share | RMS above radius | "
             "correlation with init |", "|---|---|---|---|---|---|---|---|"]
    for s in healths:
        lines.append(f"| {s['run_id']} | {s['arch']} | {s['filters']} ({s['kernel']}) | {s['dead']} | "
                     f"{s['dominant_low']}/{s['dominant_mid']}/{s['dominant_high']} | {s['mean_mid_share']:.3f} | "
                     f"{s['above_radius']} (radius {s['radius']:g}) | {'—' if s['init_correlation'] == '' else s['init_correlation']} |")
    return lines


def _grid_summary(grid: Grid) -> str:
    """What a grid rests on, for reading two of them side by side: runs, units, base nets, epochs."""
    bases = [r for r in grid.records if r["treatment"] in ("baseA", "baseB")]
    epochs = sorted({r["epochs"] for r in bases if r.get("epochs") is not None})
    top1 = f"mean test top-1 {100 * sum(r['top1'] for r in bases) / len(bases):.1f} %" if bases else "no base nets"
    return (f"{len(grid.records)} runs, {len(grid.units(exclude_kind='dissimilar'))} random-split units, "
            f"{len(bases)} base nets ({top1}, {'/'.join(map(str, epochs)) or '?'} epochs)")


def against_lines(grid: Grid, other: Grid, label: str) -> list[str]:
    """The paper's findings here and in another grid (the same question under another recipe, say),
    side by side; a finding only one grid can measure (the equal-training controls) shows — for the other."""
    ours = {f["finding"]: f for f in findings(grid)}
    theirs = {f["finding"]: f for f in findings(other)}
    lines = ["", f"## Findings against {label}", "", f"Here: {_grid_summary(grid)}. {label}: {_grid_summary(other)}.",
             "", f"| finding | {label} | verdict there | here | verdict here | verdict changed |",
             "|---|---|---|---|---|---|"]
    for name in list(ours) + [n for n in theirs if n not in ours]:
        there, here = theirs.get(name), ours.get(name)
        measured = [f for f in (there, here) if f and f["verdict"] != "not run"]
        changed = ("yes" if there["verdict"] != here["verdict"] else "no") if len(measured) == 2 else "—"
        cells = [(_est(f["estimate"]), f["verdict"]) if f else ("—", "—") for f in (there, here)]
        lines.append(f"| {name} | {cells[0][0]} | {cells[0][1]} | {cells[1][0]} | {cells[1][1]} | {changed} |")
    return lines


def markdown(records: list[dict], missing: list[dict], figures: list[Path], healths=(), score_lines=(),
             against_lines_=()) -> str:
    grid = Grid(records)
    lines = ["# tfxfer report", "",
             f"{len(records)} finished runs; {len(missing)} planned runs missing. "
             "Accuracies are top-1 on the target task's test images; differences in percentage points, "
             "with 95 % confidence intervals across pairing units (split × seed × target task) and "
             "two-sided paired t-tests.", ""]
    if grid.cuts:
        lines += ["A base model file's grid: n is cut k, " + ", ".join(f"{k} = {name}" for k, name in
                                                                    sorted(grid.cuts.items())) +
                  "; baseB is its layers up to the deepest cut trained from scratch on B.", ""]
    if missing:
        lines += ["**Missing runs** (planned, no result yet — not counted anywhere below): " +
                  ", ".join(m["run_id"] for m in missing), ""]
    for fig in figures:
        if fig.suffix == ".png":
            lines += [f"![{fig.stem}]({fig.name})", ""]
    lines += ["## Findings of Yosinski et al. (2014), here", "", "| finding | ours | verdict | measured as |",
              "|---|---|---|---|"]
    for f in findings(grid):
        lines.append(f"| {f['finding']} | {_est(f['estimate'])} | {f['verdict']} | {f['note']} |")
    lines += ["", VERDICT_RULES]
    scope = "the model file's cuts" if grid.cuts else "random splits"
    lines += ["", f"## Table 1: boost of AnB+ ({scope})", "",
              f"| {'cuts' if grid.cuts else 'layers'} aggregated | mean boost over baseB | mean boost over selffer BnB+ | "
              "boost over the equal-training base net (baseB-long) |", "|---|---|---|---|"]
    for row in table1(grid):
        lines.append(f"| {row['layers']} | {_est(row['over_base'])} | {_est(row['over_selffer_plus'])} | "
                     f"{_est(row['over_equal_training'])} |")
    lines += convergence_lines(records)
    lines += ["", f"## Co-adaptation and specificity per n ({scope})", "",
              "| n | co-adaptation loss (baseB − BnB) | specificity loss (BnB − AnB) | dominant |", "|---|---|---|---|"]
    for row in losses(grid):
        lines.append(f"| {row['n']} | {_est(row['coadaptation'])} | {_est(row['specificity'])} | "
                     f"{row['dominant'] or '—'} |")
    lines += list(against_lines_)
    lines += per_unit_lines(grid) + table3_lines(records) + health_lines(list(healths)) + list(score_lines)
    lines += ["", "## Runs", "", "See results.csv (one row per run)."]
    return "\n".join(lines) + "\n"


def to_html(md: str, out: Path) -> str:
    """The markdown as one self-contained page: tables as tables, figures embedded as data URIs."""
    body, table = [], []

    def flush():
        if table:
            rows = [r for r in table if not set(r.replace("|", "").strip()) <= {"-"}]
            cells = [[html.escape(c.strip()) for c in r.strip().strip("|").split("|")] for r in rows]
            head = "".join(f"<th>{c}</th>" for c in cells[0])
            rest = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in cells[1:])
            body.append(f"<table><tr>{head}</tr>{rest}</table>")
            table.clear()

    for line in md.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("!["):
            name = line[line.index("(") + 1:-1]
            data = base64.b64encode((out / name).read_bytes()).decode()
            body.append(f'<p><img alt="{html.escape(name)}" src="data:image/png;base64,{data}" style="max-width:100%"></p>')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            body.append(f"<p>{html.escape(line).replace('**', '')}</p>")
    flush()
    style = "body{font-family:sans-serif;max-width:1100px;margin:2em auto}td,th{border:1px solid #ccc;padding:4px}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>tfxfer report</title><style>{style}</style>" \
           f"</head><body>{''.join(body)}</body></html>\n"


def _records_of(results_dir: Path, what: str) -> list[dict]:
    if not results_dir.is_dir():
        raise UserError(f"{what} {results_dir} does not exist")
    records = load_records(results_dir)
    if not records:
        raise UserError(f"{what} {results_dir} holds no result records (*/{RESULT_FILE})")
    return records


def write_report(results_dir: str | Path, scores: bool = False, verbose: bool = False,
                 against: str | Path | None = None) -> list[Path]:
    """The report of RESULTS_DIR's records; with `scores`, first `tfxfer score` every baseA of the
    grid that has no scores of task B yet (its weights must be in RESULTS_DIR); with `against`,
    another results folder whose findings are set beside these (read only)."""
    from tfxfer.report import scores as cheap

    results_dir = Path(results_dir)
    records = _records_of(results_dir, "results directory")
    compared = []
    if against is not None:
        against = Path(against)
        compared = against_lines(Grid(records), Grid(_records_of(against, "--against directory")), against.name)
    if scores:
        cheap.compute_missing(results_dir, records, verbose=verbose)
    grid = Grid(records)
    figures = figure2(grid, results_dir) + figure3(grid, results_dir)
    splits = cheap.splits_with_scores(results_dir, records)
    score_figure = cheap.figure(splits, results_dir / "scores_vs_n.png")
    score_lines = cheap.section(splits, score_figure)
    from tfxfer.diagnose.filters import base_health

    md = markdown(records, missing_runs(results_dir, records), figures, base_health(results_dir, records),
                  score_lines, compared)
    outputs = [("results.csv", results_csv(records)), ("report.md", md), ("report.html", to_html(md, results_dir))]
    if score_figure is not None:  # the section alone, to be read or committed without the whole report
        outputs.append(("scores.md", "\n".join(["# Transferability scores against the grid"] + score_lines[2:]) + "\n"))
    written = []
    for name, text in outputs:
        atomic_write_text(results_dir / name, text)
        written.append(results_dir / name)
    return written + figures + ([score_figure] if score_figure is not None else [])
