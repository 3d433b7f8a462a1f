"""From result records to the paper's numbers: roles, pairing units, per-n means with 95 % CIs,
Table 1, the co-adaptation / specificity decomposition, and the findings' verdicts.

A *unit* is one (split, seed, target task): a base net and the treatments trained toward the same
target on the same split are paired within it, and confidence intervals are taken across units.
As in the paper (footnote 3), AnA is folded into BnB and BnA into AnB: they are the same
experiment with the tasks' names swapped.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path

import numpy as np
from scipy import stats

from tfxfer.runs.layout import RESULT_FILE
from tfxfer.runs.records import RESULT_FIELDS
from tfxfer.treatments import get_treatment

ROLES = ("base", "selffer", "selffer+", "transfer", "transfer+", "random", "base-long")
LABELS = {"base": "baseB", "selffer": "BnB", "selffer+": "BnB+", "transfer": "AnB", "transfer+": "AnB+",
          "random": "random", "base-long": "baseB-long"}
# A base net is converged when the same recipe with twice the epochs gains less than this in validation top-1.
CONVERGED_GAIN = 0.005
# A base model file's grid is read the same way over its cuts (n = cut k): it stands in Figure 2,
# Table 1 and the findings in place of the paper's random splits, whatever split its task B is of.
FILE_UNIT = "model file"


def table1_ranges(k: int = 7) -> list[tuple[int, int]]:
    """The paper's layer ranges 1-7, 3-7 and 5-7, for k cuts: all, all but the first 2 and 4."""
    return list(dict.fromkeys((max(1, lo), k) for lo in (1, k - 4, k - 2)))


def role(treatment: str) -> str:
    t = get_treatment(treatment)
    if t.is_base:
        return "base-long" if t.epochs_factor > 1 else "base"
    if t.source is None:
        return "random"
    kind = "selffer" if t.source == t.target else "transfer"
    return kind + ("+" if t.fine_tune else "")


def load_records(results_dir: Path) -> list[dict]:
    return sorted((json.loads(p.read_text()) for p in Path(results_dir).glob(f"*/{RESULT_FILE}")),
                  key=lambda r: (r["split"], r["split_seed"] or 0, r["treatment"], r["n"]))


def results_csv(records: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    columns = [f for f in RESULT_FIELDS if f != "config"]
    writer.writerow(columns)
    for r in records:
        writer.writerow([" ".join(map(str, v)) if isinstance(v := r.get(c), list) else v for c in columns])
    return buf.getvalue()


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A mean over units with its 95 % t-interval (None with fewer than two units) and a two-sided
    one-sample t-test against 0 — for differences within units, the paired test."""

    mean: float
    lo: float | None
    hi: float | None
    p: float | None
    units: int
    runs: int  # the (unit, n) pairs behind the mean

    @classmethod
    def of(cls, values, runs: int | None = None) -> "Estimate | None":
        values = np.asarray([v for v in values if v is not None], float)
        if len(values) == 0:
            return None
        mean = float(values.mean())
        if len(values) < 2:
            return cls(mean, None, None, None, 1, runs if runs is not None else 1)
        sem = stats.sem(values)
        if sem == 0:
            lo = hi = mean
            p = 0.0 if mean != 0 else 1.0
        else:
            lo, hi = (float(v) for v in stats.t.interval(0.95, len(values) - 1, loc=mean, scale=sem))
            p = float(stats.ttest_1samp(values, 0.0).pvalue)
        return cls(mean, lo, hi, p, len(values), runs if runs is not None else len(values))

    def includes_zero(self) -> bool:
        return self.lo is not None and self.lo <= 0 <= self.hi

    def text(self, pct: bool = True) -> str:
        f = (lambda v: f"{100 * v:+.1f}") if pct else (lambda v: f"{v:.3f}")
        ci = f" [{f(self.lo)}, {f(self.hi)}]" if self.lo is not None else " (no CI)"
        return f"{f(self.mean)}{ci}"


def variant(record: dict) -> str | None:
    """The record's arch variant (Table 3 ablation), None for the arch as registered."""
    return (record.get("config") or {}).get("arch", {}).get("variant")


class Grid:
    """The records of one or more splits, indexed by unit, role and n (arch variants left out:
    they are not the base net any treatment is read against)."""

    def __init__(self, records: list[dict]):
        records = [r for r in records if variant(r) is None]
        self.records = records
        # A model file's runs: n is cut k; the layer each k names, and how many there are.
        self.cuts = {r["n"]: r["cut"] for r in records if r.get("cut") and r["n"]}
        self.n_max = max(self.cuts, default=0) or 7
        self.cells: dict[tuple, dict[tuple[str, int], float]] = {}
        self.records_of: dict[tuple, list[dict]] = {}
        for r in records:
            target = get_treatment(r["treatment"]).target
            # A model file's runs pair among themselves (and with the file's baseB) only.
            unit = (FILE_UNIT if r.get("base_model_sha256") else r["split"], r["split_hash"], r["seed"], target,
                    r.get("base_model_sha256"))
            self.cells.setdefault(unit, {})[(role(r["treatment"]), r["n"])] = r["top1"]
            self.records_of.setdefault(unit, []).append(r)

    def units(self, split_kind: str | None = None, exclude_kind: str | None = None) -> list[tuple]:
        """Units with at least one treatment (base nets alone, e.g. the source of AnB, compare nothing)."""
        return [u for u, cells in self.cells.items()
                if (split_kind is None or u[0] == split_kind) and u[0] != exclude_kind
                and any(not r.startswith("base") for r, _ in cells)]

    def n_label(self, n: int) -> str:
        return f"cut {n} ({self.cuts[n]})" if n in self.cuts else f"n = {n}"

    def value(self, unit, role_: str, n: int) -> float | None:
        return self.cells[unit].get((role_, 0 if role_.startswith("base") else n))

    def ns(self, role_: str, units=None) -> list[int]:
        units = units if units is not None else list(self.cells)
        return sorted({n for u in units for (r, n) in self.cells[u] if r == role_})

    def diff(self, unit, a: str, b: str, ns) -> float | None:
        """Mean over n of (a − b) within one unit, over the n where both exist."""
        pairs = [(self.value(unit, a, n), self.value(unit, b, n)) for n in ns]
        pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
        return float(np.mean([x - y for x, y in pairs])) if pairs else None

    def estimate(self, a: str, b: str, ns, units) -> Estimate | None:
        diffs = [self.diff(u, a, b, ns) for u in units]
        pairs = sum(1 for u in units for n in ns if self.value(u, a, n) is not None and self.value(u, b, n) is not None)
        return Estimate.of(diffs, pairs)

    def per_n(self, role_: str, units) -> dict[int, Estimate]:
        return {n: e for n in self.ns(role_, units)
                if (e := Estimate.of([self.value(u, role_, n) for u in units])) is not None}


def per_unit(grid: Grid) -> list[dict]:
    """Each unit's base accuracy and, per treatment and n, top-1 minus it: the numbers behind every
    CI, one split at a time."""
    rows = []
    for unit in grid.units():
        recs = grid.records_of[unit]
        base = grid.value(unit, "base", 0)
        by_treatment: dict[str, dict[int, float | None]] = {}
        for r in sorted(recs, key=lambda r: (ROLES.index(role(r["treatment"])), r["n"])):
            if not get_treatment(r["treatment"]).is_base:
                by_treatment.setdefault(r["treatment"], {})[r["n"]] = None if base is None else r["top1"] - base
        split = recs[0]["split"] + (f" {recs[0]['split_seed']}" if recs[0]["split_seed"] is not None else "")
        rows.append({"split": split, "seed": unit[2], "target": unit[3], "classes": recs[0]["classes"],
                     "base": base, "diffs": by_treatment})
    return rows


def table1(grid: Grid) -> list[dict]:
    """Mean boost of AnB+ over baseB and over BnB+ for the paper's layer ranges (random splits)."""
    units = grid.units(exclude_kind="dissimilar")
    rows = []
    for lo, hi in table1_ranges(grid.n_max):
        ns = range(lo, hi + 1)
        rows.append({"layers": f"{lo}-{hi}", "over_base": grid.estimate("transfer+", "base", ns, units),
                     "over_selffer_plus": grid.estimate("transfer+", "selffer+", ns, units),
                     "over_equal_training": grid.estimate("transfer+", "base-long", ns, units)})
    return rows


def _final_val(record: dict) -> float | None:
    last = record.get("val_top1_last")
    return last[-1] if last else record.get("best_val_top1")


def convergence(records: list[dict]) -> list[dict]:
    """Per base net: the validation top-1 of its last epochs and, where the same recipe was also
    run with twice the epochs (its equal-training control), that run's final validation top-1, the
    gain, and `converged` (gain < CONVERGED_GAIN; None when no such run exists). `test_gain`, the
    same difference in test top-1, is shown beside it and never decides the flag."""
    def key(r):  # the same data, split, arch, recipe and seed: only the epochs differ
        cfg = json.loads(json.dumps(r.get("config") or {}))
        cfg.get("recipe", {}).pop("epochs", None)
        cfg.pop("out", None)
        return r["split_hash"], get_treatment(r["treatment"]).target, json.dumps(cfg, sort_keys=True)

    longs = {key(r): r for r in records if role(r["treatment"]) == "base-long"}
    rows = []
    for r in records:
        if role(r["treatment"]) != "base":
            continue
        long = longs.get(key(r))
        gain = None
        if long is not None and _final_val(long) is not None and _final_val(r) is not None:
            gain = _final_val(long) - _final_val(r)
        rows.append({"run_id": r["run_id"], "treatment": r["treatment"], "split": r["split"],
                     "split_seed": r["split_seed"], "epochs": r["epochs"], "top1": r["top1"],
                     "val_top1_last": r.get("val_top1_last") or [], "long_run_id": long and long["run_id"],
                     "long_epochs": long and long["epochs"], "long_val_top1": long and _final_val(long),
                     "gain": gain, "test_gain": long and long["top1"] - r["top1"],
                     "converged": None if gain is None else gain < CONVERGED_GAIN})
    return rows


def losses(grid: Grid) -> list[dict]:
    """Per n, the two effects the paper separates: co-adaptation (baseB − BnB) and specificity
    (BnB − AnB); which one is larger."""
    units = grid.units(exclude_kind="dissimilar")
    rows = []
    for n in sorted(set(grid.ns("selffer", units)) | set(grid.ns("transfer", units))):
        co = grid.estimate("base", "selffer", [n], units)
        spec = grid.estimate("selffer", "transfer", [n], units)
        dominant = None
        if co is not None and spec is not None:
            dominant = "co-adaptation" if co.mean > spec.mean else "specificity"
        rows.append({"n": n, "coadaptation": co, "specificity": spec, "dominant": dominant})
    return rows


def _said(ok: bool) -> str:
    return "reproduced" if ok else "not reproduced"


# A "≈" finding holds within this much of 0, and a drop under it is no co-adaptation dip.
APPROX_TOL = 0.01
VERDICT_RULES = (
    f"Verdicts: a \"≈\" finding (1, 3, 3b) is reproduced when its mean is within {100 * APPROX_TOL:g} point of 0, "
    "however wide its CI (the CI says how sure), and not reproduced when it is farther off with a CI that "
    "excludes 0. A directional finding (4, 5, 5b, 6, 7) is reproduced when its CI lies on the paper's side "
    "of 0 and not when it lies on the other; (4) also needs specificity to dominate at n ≥ 6. (2) is "
    f"reproduced by a drop of over {100 * APPROX_TOL:g} point whose CI excludes 0 and a recovery at n = 7; "
    "a smaller drop, or one that does not recover, is not. Otherwise, and for any finding without a CI, "
    "the verdict is inconclusive.")


# A CI across 0 decides nothing with two or three units, and the verdict says so rather than let the
# mean alone claim a finding. Without a CI (one unit; finding 6 with fewer than two of each kind)
# nothing is decided either: the verdict is inconclusive and says what the point estimate alone gives.
def _approx_zero(e: Estimate, tol: float = APPROX_TOL) -> str:
    """A "≈" finding: reproduced within tol (a fraction: 0.01 is 1 point); farther off, refuted only by a
    CI that excludes 0."""
    if abs(e.mean) <= tol or e.lo is None:
        return _said(abs(e.mean) <= tol)
    return f"inconclusive: more than {100 * tol:g} point off, CI includes 0" if e.includes_zero() else "not reproduced"


def _direction(e: Estimate, paper_sign: int) -> str:
    """A directional finding: reproduced when the CI lies on the paper's side of 0, not when it lies on the other."""
    if e.lo is None:
        return _said(e.mean * paper_sign >= 0)
    lo, hi = sorted((e.lo * paper_sign, e.hi * paper_sign))
    if lo > 0 or hi < 0:
        return _said(lo > 0)
    side = "the paper's" if e.mean * paper_sign >= 0 else "the other"
    return f"inconclusive: CI includes 0, mean on {side} side"


def findings(grid: Grid) -> list[dict]:
    """The paper's findings, each with our number, its CI and whether it reproduced here."""
    similar = grid.units(exclude_kind="dissimilar")
    out = []

    def add(name, estimate, verdict, note):
        if estimate is None:
            said = "not run"
        elif estimate.lo is None:
            units = f"{estimate.units} unit" + ("s" if estimate.units != 1 else "")
            said = f"inconclusive: no CI ({units}); the point estimate alone: {verdict()}"
        else:
            said = verdict()
        out.append({"finding": name, "estimate": estimate, "verdict": said, "note": note})

    e1 = grid.estimate("selffer", "base", [1, 2], similar)
    add("(1) BnB ≈ baseB at n = 1–2", e1, lambda: _approx_zero(e1), "mean of BnB − baseB over n = 1, 2")

    drops = {n: grid.estimate("base", "selffer", [n], similar) for n in range(3, 7)}
    drops = {n: e for n, e in drops.items() if e is not None}
    worst = max(drops, key=lambda n: drops[n].mean) if drops else None
    e2 = drops.get(worst) if worst else None
    recovery = grid.estimate("selffer", "base", [7], similar)

    def v2():
        # The largest of four drops is biased upwards: under APPROX_TOL it is no dip.
        if e2.mean > APPROX_TOL and e2.includes_zero():
            return f"inconclusive: a drop of over {100 * APPROX_TOL:g} point, CI includes 0"
        return _said(e2.mean > APPROX_TOL and recovery is not None and -recovery.mean < e2.mean)

    add("(2) BnB drops in the middle layers (fragile co-adaptation) and recovers near the top", e2, v2,
        f"largest baseB − BnB over n = 3–6 (at n = {worst}); BnB − baseB at n = 7: "
        f"{recovery.text() if recovery else 'not run'}")

    e3 = grid.estimate("selffer+", "base", range(1, 8), similar)
    add("(3) BnB+ ≈ baseB", e3, lambda: _approx_zero(e3), "mean of BnB+ − baseB over n = 1–7")
    # BnB+'s layers 1..n trained for the base's epochs and then its own: against a base net trained
    # that long, a gain over baseB that is only extra training vanishes.
    e3b = grid.estimate("selffer+", "base-long", range(1, 8), similar)
    if e3b is not None:
        add("(3b) BnB+ ≈ baseB trained as long (equal-training control)", e3b, lambda: _approx_zero(e3b),
            "mean of BnB+ − baseB-long over n = 1–7")

    e4 = None
    ns = grid.ns("transfer", similar)
    if ns:
        e4 = Estimate.of([None if (a := grid.value(u, "transfer", ns[-1])) is None or
                          (b := grid.value(u, "transfer", ns[0])) is None else a - b for u in similar])
    top_losses = [row for row in losses(grid) if row["n"] >= 6 and row["dominant"]]
    dominant = ", ".join(f"n={row['n']}: {row['dominant']}" for row in top_losses) or "not run"
    add("(4) AnB falls with n, specificity dominating at the top", e4,
        lambda: _direction(e4, -1) if top_losses and all(r["dominant"] == "specificity" for r in top_losses)
        else "not reproduced",
        f"AnB(n = {ns[-1] if ns else '?'}) − AnB(n = {ns[0] if ns else '?'}); dominant effect at n ≥ 6: "
        f"{dominant}")

    t1 = table1(grid)[0]
    e5, e5b = t1["over_base"], t1["over_equal_training"]
    k = grid.n_max
    add(f"(5) AnB+ ≥ baseB (Table 1's boost, layers 1–{k})", e5, lambda: _direction(e5, +1),
        f"mean of AnB+ − baseB over n = 1–{k}")
    if e5b is not None:
        add("(5b) AnB+ ≥ baseB trained as long (the boost that extra training cannot explain)", e5b,
            lambda: _direction(e5b, +1), f"mean of AnB+ − baseB-long over n = 1–{k}")

    high = [6, 7]
    d = [v for u in grid.units("dissimilar") if (v := grid.diff(u, "transfer", "base", high)) is not None]
    s = [v for u in similar if (v := grid.diff(u, "transfer", "base", high)) is not None]
    e6 = None
    if d and s:
        e6 = Estimate(float(np.mean(d) - np.mean(s)), None, None, None, len(d) + len(s), len(d) + len(s))
        if len(d) >= 2 and len(s) >= 2:
            lo, hi = stats.ttest_ind(d, s, equal_var=False).confidence_interval(0.95)
            e6 = dataclasses.replace(e6, lo=float(lo), hi=float(hi))
    add("(6) the dissimilar split transfers worse at high n", e6, lambda: _direction(e6, -1),
        f"(AnB − baseB) at n = 6–7, dissimilar ({len(d)} units) minus random splits ({len(s)}); "
        "Welch CI with at least 2 of each")

    e7 = grid.estimate("random", "transfer", range(1, k + 1), grid.units())
    add("(7) random frozen weights do worse than transferred ones", e7, lambda: _direction(e7, -1),
        f"mean of random − AnB over n = 1–{k}, paired by split")
    return out


def table3(records: list[dict]) -> list[dict]:
    """Zeiler & Fergus Table 3: per arch, the arch as registered and each of its variants trained from
    scratch, with train top-1, test top-1 and test top-5 as means over seeds with 95 % CIs. Empty
    when no record is of a variant."""
    from tfxfer.models import VARIANTS

    bases = [r for r in records if get_treatment(r["treatment"]).is_base]
    rows = []
    for arch in sorted({r["arch"] for r in bases if variant(r) is not None}):
        # The reference: base nets of the arch as registered, trained on the task(s) the variants were.
        tasks = {r["treatment"] for r in bases if r["arch"] == arch and variant(r) is not None}
        for name in [None, *VARIANTS]:
            runs = [r for r in bases if r["arch"] == arch and variant(r) == name and r["treatment"] in tasks]
            if runs:
                rows.append({"arch": arch, "variant": name or "—",
                             "description": VARIANTS[name].description if name else "as registered",
                             "seeds": sorted({r["seed"] for r in runs}), "runs": len(runs),
                             **{k: Estimate.of([r.get(k) for r in runs]) for k in ("train_top1", "top1", "top5")}})
    return rows
