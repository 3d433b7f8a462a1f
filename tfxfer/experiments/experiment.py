"""`tfxfer experiment`: plan a config's grid, print the plan, then work on it here or in worker processes."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tfxfer.config import load_config, resolve_base_model
from tfxfer.errors import RunFailed, UserError
from tfxfer.experiments.planner import Plan, plan_experiment
from tfxfer.runs.layout import WEIGHTS_FILE


def run_experiment(config_name: str, *, out: str | None = None, epochs: int | None = None,
                   splits: Sequence[int] = (), jobs: int = 1, lease_s: float = 120.0, dry_run: bool = False,
                   verbose: bool = True, overrides: dict | None = None, worker_args: Sequence[str] = (),
                   reproduce_bases: bool = False) -> Plan:
    """Every split x treatment x n of CONFIG's experiment section (or the entries `splits` of
    experiment.splits), base nets first; finished runs are skipped and interrupted ones resume.

    `out` and `epochs` override the config's out and recipe.epochs for every run. With `jobs` > 1,
    that many worker processes share the grid (each on its own GPU(s) when there are GPUs); raises
    RunFailed naming the workers that failed. Returns the plan.

    `overrides`: more dotted config keys (e.g. base_model.path: a model file's grid over its cuts,
    the file loaded and checked here, before anything is written); `worker_args`: the command-line
    flags that give a worker the same.

    A finished base whose weights are missing while runs still copy it is an error, unless
    `reproduce_bases`: then it is retrained first and its weights restored if it reproduces its
    record (runner.reproduce), before any other run starts.
    """
    given = {key: value for key, value in (("out", out), ("recipe.epochs", epochs)) if value is not None}
    config = load_config(config_name, {**given, **(overrides or {})})
    if jobs < 1:
        raise UserError(f"jobs {jobs} is not allowed; expected an integer >= 1")
    config = resolve_base_model(config)
    plan = plan_experiment(config, splits)
    out_dir = Path(config.out)
    print(plan.describe(out_dir), flush=True)
    if dry_run:
        return plan
    from tfxfer.experiments import grid  # TensorFlow loads here, after the config and flags are checked

    lost = [spec.run_id for spec in grid.lost_bases(plan, out_dir)]
    if lost and not reproduce_bases:
        raise UserError(f"runs still to train copy {', '.join(lost)}, which finished but lack {WEIGHTS_FILE} in "
                        f"{out_dir}; allowed: restore the file(s), or add --reproduce-bases to retrain them and "
                        "check each against its record")
    loaded = grid.load_all(plan)  # bad data settings fail here, before anything is written
    # The whole experiment's plan, even when `splits` runs a part of it (a session per split), so a
    # report names every run still missing.
    grid.write_plan(plan_experiment(config) if splits else plan, config, out_dir)
    grid.reproduce_lost_bases(plan, out_dir, loaded, verbose=verbose)
    if jobs == 1:
        grid.run_grid(plan, out_dir, loaded, lease_s=lease_s, verbose=verbose)
    else:
        failed = grid.run_workers(config_name, [*worker_flags(out, epochs, splits, lease_s), *worker_args], plan,
                                  out_dir, jobs)
        if failed:
            raise RunFailed(f"worker(s) {failed} failed; see {out_dir / 'logs'}/worker-<i>.log")
    print(f"grid finished: {len(plan.runs)} runs in {out_dir}; next: tfxfer report {out_dir}", flush=True)
    return plan


def worker_flags(out: str | None, epochs: int | None, splits: Sequence[int], lease_s: float) -> list[str]:
    """The `tfxfer experiment CONFIG` flags that give a `--jobs` worker this experiment's grid."""
    flags = [f for k, v in (("--out", out), ("--epochs", epochs)) if v is not None for f in (k, str(v))]
    return [*flags, *(f for i in splits for f in ("--split", str(i))), "--lease", str(lease_s)]
