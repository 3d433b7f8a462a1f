"""The report's "Do cheap scores predict the grid?" on hand-made records and hand-written score.csv
files: the τ and ρ it prints are scipy's on the same table, the CIs are t-intervals by hand, the depth
ranker is there, and --scores refuses a grid without the baseA weights."""
import json

import numpy as np
import pytest
from scipy import stats
from test_report import BASE, by_hand, hand_made

from tfxfer.errors import UserError
from tfxfer.report import write_report
from tfxfer.report.scores import correlations, splits_with_scores, summary
from tfxfer.scores.score import to_csv

# Per split, baseA's logme per layer (n = 1..7): split 0 ranks the layers as AnB does, except one swap.
LOGME = {0: [7, 6, 5, 3, 4, 2, 1], 1: [1, 2, 3, 4, 5, 6, 7], 2: [4, 7, 1, 6, 2, 5, 3]}
HSCORE = {s: [0.5 + 0.1 * ((3 * n + s) % 7) for n in range(1, 8)] for s in range(3)}


def write_grid(root, with_scores=True):
    records = hand_made()
    for r in records:
        r["wall_s"] = 100.0
        (root / r["run_id"]).mkdir()
        (root / r["run_id"] / "result.json").write_text(json.dumps(r))
    if with_scores:
        for s in range(3):
            base = next(r for r in records if r["treatment"] == "baseA" and r["split_seed"] == s)
            rows = [{"run_id": base["run_id"], "target": "synthetic task B", "view": "avg", "metric": m,
                     "layer": f"l{n}", "layer_index": n, "score": v[s][n - 1], "dim": 8, "images": 100,
                     "classes": 2, "seed": 0, "seconds": 0.1}
                    for m, v in (("logme", LOGME), ("hscore", HSCORE)) for n in range(1, 8)]
            rows.append({**rows[0], "metric": "leep", "layer": "fc8", "layer_index": 8, "score": -0.5 - s})
            folder = root / base["run_id"] / "scores" / "synthetic_task_B-avg"
            folder.mkdir(parents=True)
            (folder / "score.csv").write_text(to_csv(rows))
            (folder / "score.json").write_text(json.dumps({"images": 100, "view": "avg", "total_s": 5.0,
                                                          "extract_s": 2.0}))
    return records


def test_tau_and_rho_are_scipys_on_the_reported_table_with_t_intervals(tmp_path):
    records = write_grid(tmp_path)
    splits = splits_with_scores(tmp_path, records)
    assert [s["split_seed"] for s in splits] == [0, 1, 2] and all(s["scores"] for s in splits)
    taus = []
    for s, split in enumerate(splits):
        anb = [split["measured"]["AnB"][n] for n in range(1, 8)]
        assert anb == pytest.approx([BASE[s] - 0.01 * (n - 1) - 0.003 * s for n in range(1, 8)])
        c = correlations(split)
        tau = stats.kendalltau(LOGME[s], anb).statistic
        assert c["logme"]["AnB"][0] == pytest.approx(tau)
        assert c["logme"]["AnB"][1] == pytest.approx(stats.spearmanr(LOGME[s], anb).statistic)
        assert c["depth"]["AnB"][:2] == pytest.approx((1.0, 1.0))  # AnB falls with n in this grid
        assert "leep" not in c  # one value per network: no ranking of layers
        taus.append(tau)
    rows = {(r["metric"], r["measured"]): r for r in summary(splits)}
    mean, lo, hi = by_hand(taus)
    e = rows["logme", "AnB"]["tau"]
    assert (e.mean, e.lo, e.hi) == pytest.approx((mean, lo, hi))
    d = rows["logme", "AnB"]["tau_minus_depth"]
    assert (d.mean, d.lo, d.hi) == pytest.approx(by_hand(np.array(taus) - 1.0))
    assert rows["depth", "AnB"]["tau_minus_depth"] is None

    written = {p.name for p in write_report(tmp_path)}
    assert {"scores.md", "scores_vs_n.png"} <= written
    md = (tmp_path / "report.md").read_text()
    assert "## Do cheap scores predict the grid?" in md and "![scores_vs_n](scores_vs_n.png)" in md
    assert "| avg | depth | AnB | +1.00 [+1.00, +1.00] |" in md
    assert f"| avg | logme | AnB | {mean:+.2f} [{lo:+.2f}, {hi:+.2f}] |" in md
    assert f"| random 0 | {splits[0]['base']['run_id']} " in md and "leep random 0 = -0.5000" in md
    # Scoring against training: 5 s against the split's 30 runs of 100 s each.
    assert "| random 0 | avg | 5.0 s (features 2.0 s) | 3000 s | 600× |" in md
    assert (tmp_path / "scores.md").read_text().startswith("# Transferability scores against the grid")

    # A second view of split 0: its own entry, after every split's default (pooled) one.
    pooled = tmp_path / splits[0]["base"]["run_id"] / "scores" / "synthetic_task_B-avg"
    flat = pooled.with_name("synthetic_task_B-flatten")
    flat.mkdir()
    (flat / "score.csv").write_text((pooled / "score.csv").read_text().replace(",avg,", ",flatten,"))
    views = [(s["view"], s["split_seed"]) for s in splits_with_scores(tmp_path, records)]
    assert views == [("avg", 0), ("avg", 1), ("avg", 2), ("flatten", 0)]


def test_without_scores_the_section_says_how_to_get_them_and_scores_needs_weights(tmp_path):
    records = write_grid(tmp_path, with_scores=False)
    names = {p.name for p in write_report(tmp_path)}
    assert "scores_vs_n.png" not in names and "scores.md" not in names
    assert "No baseA run of this grid has scores of task B yet" in (tmp_path / "report.md").read_text()
    base = next(r["run_id"] for r in records if r["treatment"] == "baseA")
    with pytest.raises(UserError, match=f"scoring the grid needs the weights of {base}"):
        write_report(tmp_path, scores=True)
