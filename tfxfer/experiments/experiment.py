"""`tfxfer experiment`: plan a config's grid, print the plan, then work on it here or in worker processes."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tfxfer.config import load_config
from tfxfer.errors import RunFailed, UserError
from tfxfer.experiments.planner import Plan, plan_experiment


def run_experiment(config_name: str, *, out: str | None = None, epochs: int | None = None,
                   splits: Sequence[int] = (), jobs: int = 1, lease_s: float = 120.0, dry_run: bool = False,
                   verbose: bool = True) -> Plan:
    """Every split x treatment x n of CONFIG's experiment section (or the entries `splits` of
    experiment.splits), base nets first; finished runs are skipped and interrupted ones resume.

    `out` and `epochs` override the config's out and recipe.epochs for every run. With `jobs` > 1,
    that many worker processes share the grid (each on its own GPU(s) when there are GPUs); raises
    RunFailed naming the workers that failed. Returns the plan.
    """
    overrides = {key: value for key, value in (("out", out), ("recipe.epochs", epochs)) if value is not None}
    config = load_config(config_name, overrides)
    if jobs < 1:
        raise UserError(f"jobs {jobs} is not allowed; expected an integer >= 1")
    plan = plan_experiment(config, splits)
    out_dir = Path(config.out)
    print(plan.describe(out_dir), flush=True)
    if dry_run:
        return plan
    from tfxfer.experiments import grid  # TensorFlow loads here, after the config and flags are checked

    loaded = grid.load_all(plan)  # bad data settings fail here, before anything is written
    # The whole experiment's plan, even when `splits` runs a part of it (a session per split), so a
    # report names every run still missing.
    grid.write_plan(plan_experiment(config) if splits else plan, config, out_dir)
    if jobs == 1:
        grid.run_grid(plan, out_dir, loaded, lease_s=lease_s, verbose=verbose)
    else:
        failed = grid.run_workers(config_name, worker_flags(out, epochs, splits, lease_s), plan, out_dir, jobs)
        if failed:
            raise RunFailed(f"worker(s) {failed} failed; see {out_dir / 'logs'}/worker-<i>.log")
    print(f"grid finished: {len(plan.runs)} runs in {out_dir}; next: tfxfer report {out_dir}", flush=True)
    return plan


def worker_flags(out: str | None, epochs: int | None, splits: Sequence[int], lease_s: float) -> list[str]:
    """The `tfxfer experiment CONFIG` flags that give a `--jobs` worker this experiment's grid."""
    flags = [f for k, v in (("--out", out), ("--epochs", epochs)) if v is not None for f in (k, str(v))]
    return [*flags, *(f for i in splits for f in ("--split", str(i))), "--lease", str(lease_s)]
