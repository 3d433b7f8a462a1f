"""The report from hand-made result records: Table 1 and its CIs computed by hand here."""
import csv
import json
import math

import numpy as np
import pytest

from tfxfer.errors import UserError
from tfxfer.report import write_report
from tfxfer.report.analysis import Grid, findings, losses, per_unit, table1
from tfxfer.runs.records import RESULT_FIELDS

T_975_DF2 = 4.302652729911275  # Student t, 97.5 % quantile, 2 degrees of freedom

BASE = [0.60, 0.62, 0.64]  # baseB of three random splits
# Per split and n, the accuracy of each treatment relative to its baseB.
REL = {
    "BnB": lambda s, n: [0.0, 0.0, -0.02, -0.05, -0.04, -0.01, 0.0][n - 1] + 0.002 * s,
    "BnB+": lambda s, n: 0.001 * (s - 1),
    "AnB": lambda s, n: -0.01 * (n - 1) - 0.003 * s,
    "AnB+": lambda s, n: 0.01 + 0.002 * n + 0.004 * s,
}


def record(treatment, n, split, top1, kind="random"):
    r = {f: None for f in RESULT_FIELDS}
    r.update(run_id=f"{treatment}{n or ''}-s{split}{kind[0]}", treatment=treatment, n=n, split=kind,
             split_seed=split if kind == "random" else None, split_hash=f"hash{split}{kind}", classes=["x", "y"],
             seed=0, top1=top1, top5=1.0, dataset="synthetic", arch="cifar8", config={})
    return r


def hand_made(with_missing_n=None):
    records = []
    for s, base in enumerate(BASE):
        records.append(record("baseB", 0, s, base))
        records.append(record("baseA", 0, s, base - 0.05))
        for t, rel in REL.items():
            for n in range(1, 8):
                if (t, s, n) != with_missing_n:
                    records.append(record(t, n, s, base + rel(s, n)))
    return records


def by_hand(values):
    values = np.array(values)
    mean = values.mean()
    half = T_975_DF2 * values.std(ddof=1) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def test_table1_matches_a_hand_computation():
    rows = table1(Grid(hand_made()))
    for row, (lo, hi) in zip(rows, ((1, 7), (3, 7), (5, 7))):
        ns = range(lo, hi + 1)
        boost = [np.mean([REL["AnB+"](s, n) for n in ns]) for s in range(3)]
        over_plus = [np.mean([REL["AnB+"](s, n) - REL["BnB+"](s, n) for n in ns]) for s in range(3)]
        for est, values in ((row["over_base"], boost), (row["over_selffer_plus"], over_plus)):
            mean, ci_lo, ci_hi = by_hand(values)
            assert est.mean == pytest.approx(mean, abs=1e-12)
            assert (est.lo, est.hi) == (pytest.approx(ci_lo, abs=1e-9), pytest.approx(ci_hi, abs=1e-9))
            assert est.units == 3 and est.runs == 3 * len(ns)
    # Layers 1-7: boosts 0.018, 0.022, 0.026 → mean 0.022, CI 0.022 ± 4.3027 × 0.004 / √3.
    assert rows[0]["over_base"].mean == pytest.approx(0.022)
    assert rows[0]["over_base"].hi - rows[0]["over_base"].mean == pytest.approx(T_975_DF2 * 0.004 / math.sqrt(3))
    assert rows[0]["over_base"].p < 0.05  # the paired t-test sees the boost


def test_losses_and_findings():
    grid = Grid(hand_made())
    rows = {r["n"]: r for r in losses(grid)}
    assert rows[4]["coadaptation"].mean == pytest.approx(0.05 - 0.002)  # baseB − BnB at n = 4
    assert rows[7]["specificity"].mean == pytest.approx(0.06 + 0.002 + 0.003)
    assert rows[7]["dominant"] == "specificity" and rows[4]["dominant"] == "co-adaptation"
    verdicts = {f["finding"][:3]: f["verdict"] for f in findings(grid)}
    assert verdicts["(1)"] == "reproduced" and verdicts["(2)"] == "reproduced"
    assert verdicts["(3)"] == "reproduced" and verdicts["(4)"] == "reproduced" and verdicts["(5)"] == "reproduced"
    assert verdicts["(6)"] == "not run" and verdicts["(7)"] == "not run"


def test_report_files_and_missing_runs(tmp_path):
    records = hand_made(with_missing_n=("AnB", 1, 3))
    for r in records:
        (tmp_path / r["run_id"]).mkdir()
        (tmp_path / r["run_id"] / "result.json").write_text(json.dumps(r))
    planned = [{"run_id": r["run_id"]} for r in records] + [{"run_id": "AnB3-s1r"}]
    (tmp_path / "plan.json").write_text(json.dumps(planned))
    written = write_report(tmp_path)
    names = {p.name for p in written}
    assert {"results.csv", "report.md", "report.html", "figure2.png", "figure2.svg"} <= names
    for p in written:
        assert p.stat().st_size > 500, p
    assert "figure3.png" not in names  # no dissimilar or random runs: nothing to draw, nothing invented
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert len(rows) == len(records) and "config" not in rows[0]
    md = (tmp_path / "report.md").read_text()
    assert "1 planned runs missing" in md and "AnB3-s1r" in md
    html = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in html and "<table>" in html


def test_figure3_when_dissimilar_and_random_runs_exist(tmp_path):
    records = hand_made()
    for s in range(2):
        records.append(record("baseB", 0, s, 0.7, kind="dissimilar"))
        for n in range(1, 8):
            records.append(record("AnB", n, s, 0.7 - 0.03 * n, kind="dissimilar"))
            records.append(record("random", n, s, BASE[s] - 0.05 * n))
    for r in records:
        (tmp_path / r["run_id"]).mkdir()
        (tmp_path / r["run_id"] / "result.json").write_text(json.dumps(r))
    names = {p.name for p in write_report(tmp_path)}
    assert {"figure3.png", "figure3.svg"} <= names
    verdicts = {f["finding"][:3]: f for f in findings(Grid(records))}
    assert verdicts["(6)"]["verdict"] == "reproduced" and verdicts["(7)"]["verdict"] == "reproduced"
    e6 = verdicts["(6)"]["estimate"]  # two dissimilar units against the random splits': a Welch CI
    assert e6.lo < e6.mean < e6.hi < 0 and "dissimilar (2 units)" in verdicts["(6)"]["note"]


def test_a_dissimilar_split_alone_has_figure3_and_no_empty_figure2(tmp_path):
    records = [record("baseB", 0, 0, 0.7, kind="dissimilar")]
    records += [record("AnB", n, 0, 0.7 - 0.03 * n, kind="dissimilar") for n in range(1, 8)]
    for r in records:
        (tmp_path / r["run_id"]).mkdir()
        (tmp_path / r["run_id"] / "result.json").write_text(json.dumps(r))
    names = {p.name for p in write_report(tmp_path)}
    assert {"figure3.png", "report.md"} <= names and "figure2.png" not in names
    verdicts = {f["finding"][:3]: f["verdict"] for f in findings(Grid(records))}
    assert verdicts["(6)"] == "not run"  # nothing to compare the dissimilar split with yet


def drawn_figure2(monkeypatch, records, tmp_path):
    """Figure 2's matplotlib figure as figure2() leaves it, before it is saved."""
    from tfxfer.report import figures

    drawn = []
    monkeypatch.setattr(figures, "_save", lambda fig, out, stem: drawn.append(fig) or [])
    figures.figure2(Grid(records), tmp_path)
    return drawn[0]


def test_figure2_draws_the_equal_training_control_beside_the_fine_tuned_nets(monkeypatch, tmp_path):
    longs = [dict(record("baseB-long", 0, s, base + 0.04 + 0.01 * s), epochs=52) for s, base in enumerate(BASE)]
    every, normalized = drawn_figure2(monkeypatch, hand_made() + longs, tmp_path).axes
    # Left: each split's baseB-long beside its baseB at n = 0.
    points = {c.get_label(): c.get_offsets() for c in every.collections}
    assert np.allclose(points["baseB-long"], [[0.15, 0.64], [0.15, 0.67], [0.15, 0.70]])
    # Right: its mean gain over baseB (0.04, 0.05, 0.06 -> 0.05), the line a fine-tuning boost is read against.
    lines = {line.get_label(): line.get_ydata() for line in normalized.get_lines()}
    (label,) = [k for k in lines if k.startswith("baseB-long")]
    assert np.allclose(lines[label], 0.05)
    without = drawn_figure2(monkeypatch, hand_made(), tmp_path).axes
    assert not any(line.get_label().startswith("baseB-long") for line in without[1].get_lines())


def test_report_on_nothing_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="holds no result records"):
        write_report(tmp_path)


def test_a_ci_across_zero_is_inconclusive_not_a_verdict_by_the_mean():
    # Two random splits whose fine-tuned nets disagree: AnB+ − baseB is +3 points in one, −1 in the
    # other; BnB+ − baseB +2.5 and +3.5. The means (+1, +3) alone would call (5) reproduced and (3)
    # not; two units' CIs cross 0, so neither is decided.
    records = []
    for s, (boost, selffer_plus) in enumerate(((0.03, 0.025), (-0.01, 0.035))):
        records += [record("baseB", 0, s, 0.7), record("baseA", 0, s, 0.65)]
        for n in range(1, 8):
            records += [record("AnB+", n, s, 0.7 + boost), record("BnB+", n, s, 0.7 + selffer_plus),
                        record("BnB", n, s, 0.7 - (0.03 if (s, n) == (0, 4) else 0)),
                        record("AnB", n, s, 0.7 - 0.01 * n - 0.01 * s)]
    verdicts = {f["finding"][:3]: f for f in findings(Grid(records))}
    assert verdicts["(5)"]["estimate"].mean == pytest.approx(0.01)
    assert verdicts["(5)"]["verdict"] == "inconclusive: CI includes 0, mean on the paper's side"
    assert verdicts["(3)"]["estimate"].mean == pytest.approx(0.03)
    assert verdicts["(3)"]["verdict"] == "inconclusive: more than 1 point off, CI includes 0"
    # BnB dips 3 points at n = 4 in one split only: a 1.5-point mean drop that two units cannot confirm.
    assert verdicts["(2)"]["verdict"] == "inconclusive: a drop of over 1 point, CI includes 0"
    # AnB(7) − AnB(1) is −6 points in both splits: a zero-width CI below 0 decides it.
    assert verdicts["(4)"]["verdict"] == "reproduced" and verdicts["(1)"]["verdict"] == "reproduced"
    # With one split there is no CI: nothing is decided, and the verdict says what the mean alone gives.
    one = {f["finding"][:3]: f["verdict"] for f in findings(Grid([r for r in records if r["split_seed"] == 1]))}
    assert one["(5)"] == "inconclusive: no CI (1 unit); the point estimate alone: not reproduced"
    assert one["(4)"] == "inconclusive: no CI (1 unit); the point estimate alone: reproduced"


def test_per_unit_rows_are_each_splits_differences_to_its_base(tmp_path):
    records = hand_made()
    rows = {r["split"]: r for r in per_unit(Grid(records))}
    assert set(rows) == {"random 0", "random 1", "random 2"}
    assert rows["random 1"]["base"] == pytest.approx(0.62)
    assert list(rows["random 1"]["diffs"]) == ["BnB", "BnB+", "AnB", "AnB+"]  # the paper's order
    for t, rel in REL.items():
        for n in range(1, 8):
            assert rows["random 1"]["diffs"][t][n] == pytest.approx(rel(1, n), abs=1e-12)
    for r in records:
        (tmp_path / r["run_id"]).mkdir()
        (tmp_path / r["run_id"] / "result.json").write_text(json.dumps(r))
    write_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    # AnB in split 1 at n = 1..7: −0.01 (n − 1) − 0.003, in points.
    assert "| random 1 | 0 | B (x, y) | 0.620 | AnB | -0.3 | -1.3 | -2.3 | -3.3 | -4.3 | -5.3 | -6.3 |" in md


def write_records(folder, records):
    for r in records:
        (folder / r["run_id"]).mkdir(parents=True)
        (folder / r["run_id"] / "result.json").write_text(json.dumps(r))


def test_report_against_another_grid_sets_each_verdict_beside_the_other(tmp_path):
    old = [dict(r, epochs=14) for r in hand_made()]  # findings (1)-(5) reproduced
    new = [dict(r, epochs=26, top1=r["top1"] + (0.05 if r["treatment"] == "BnB+" else 0)) for r in hand_made()]
    new += [dict(record("baseB-long", 0, s, base + 0.04), epochs=52) for s, base in enumerate(BASE)]
    write_records(tmp_path / "old", old)
    write_records(tmp_path / "new", new)
    write_report(tmp_path / "new", against=tmp_path / "old")
    md = (tmp_path / "new" / "report.md").read_text()
    section = md.split("## Findings against old")[1].split("\n## ")[0]
    rows = {line.split(" | ")[0].lstrip("| ")[:4]: line.split(" | ") for line in section.splitlines()
            if line.startswith("| (")}
    # BnB+ is now 5 points above baseB in every split: (3) flips, (1) does not.
    assert rows["(3) "][2] == "reproduced" and rows["(3) "][4] == "not reproduced" and rows["(3) "][5] == "yes |"
    assert rows["(1) "][2] == rows["(1) "][4] == "reproduced" and rows["(1) "][5] == "no |"
    # BnB+ − baseB-long: +5 − 4 = +1 point here; the old grid has no equal-training control.
    assert rows["(3b)"][1:3] == ["—", "—"] and rows["(3b)"][3].startswith("+1.0 ") and rows["(3b)"][5] == "— |"
    assert rows["(7) "][2] == rows["(7) "][4] == "not run" and rows["(7) "][5] == "— |"
    assert "Here: 93 runs, 3 random-split units, 6 base nets (mean test top-1 59.5 %, 26 epochs)." in section
    assert "old: 90 runs, 3 random-split units, 6 base nets (mean test top-1 59.5 %, 14 epochs)." in section


def test_report_against_a_missing_folder_is_one_line_exit_2_nothing_written(tmp_path, capsys):
    from tfxfer.cli import main

    write_records(tmp_path / "new", hand_made())
    with pytest.raises(SystemExit) as exit_:
        main(["report", str(tmp_path / "new"), "--against", str(tmp_path / "nope")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and err == [f"tfxfer: error: --against directory {tmp_path / 'nope'} does not exist"]
    assert not (tmp_path / "new" / "report.md").exists()
