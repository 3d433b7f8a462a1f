"""The grid as a dependency graph: every split × treatment × n, and the base nets they copy from."""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from tfxfer.config import Config, ExperimentConfig, SplitConfig
from tfxfer.errors import UserError
from tfxfer.models import external
from tfxfer.runs.layout import RESULT_FILE
from tfxfer.runs.spec import RunSpec
from tfxfer.treatments import FILE_TREATMENTS, control_of, get_treatment


@dataclasses.dataclass
class Plan:
    runs: list[RunSpec]  # bases, runs that copy them (frozen, then fine-tuned), runs that copy nothing
    deps: dict[str, str | None]  # run_id → the run_id of the base it copies from

    def ready(self, finished: set[str]) -> list[RunSpec]:
        """Unfinished runs whose base (if any) has finished."""
        return [r for r in self.runs if r.run_id not in finished and (self.deps[r.run_id] in finished or
                                                                      self.deps[r.run_id] is None)]

    def finished(self, out: Path) -> set[str]:
        return {r.run_id for r in self.runs if (out / r.run_id / RESULT_FILE).is_file()}

    def describe(self, out: Path) -> str:
        done = self.finished(out)
        lines = [f"{len(self.runs)} runs, {len(done)} finished:"]
        for r in self.runs:
            dep = f"  <- {self.deps[r.run_id]}" if self.deps[r.run_id] else ""
            state = "done" if r.run_id in done else "todo"
            variant = f" variant={r.config.arch.variant}" if r.config.arch.variant else ""
            variant += f" cut={external.cut_of(r.config.base_model, r.n)}" if r.config.base_model.path else ""
            lines.append(f"  [{state}] {r.run_id:28s} split={_split_label(r.config.split)} seed={r.config.seed}"
                         f"{variant}{dep}")
        return "\n".join(lines)


def _split_label(split: SplitConfig) -> str:
    return f"{split.kind}:{split.seed}" if split.kind == "random" else split.kind


def plan_experiment(config: Config, only: Sequence[int] = ()) -> Plan:
    """The runs of every entry of experiment.splits, or of the entries numbered in `only` (0-based)."""
    exp = config.experiment
    grids = [exp.grid(entry) for entry in exp.splits] if exp.splits else [({}, exp.treatments, exp.n)]
    for i in only:
        if not 0 <= i < len(grids):
            raise UserError(f"split {i} is not allowed; expected an index into experiment.splits, 0..{len(grids) - 1}")
    grids = [grids[i] for i in sorted(set(only))] or grids
    runs: dict[str, RunSpec] = {}
    for seed in exp.seeds or [config.seed]:
        for split, treatments, ns in grids:
            cfg = dataclasses.replace(config, seed=seed, split=SplitConfig(**split) if split else config.split)
            byon = cfg.base_model.path is not None
            if byon:  # a model file's grid: its treatments over every cut (the file is the base)
                ns = range(1, len(cfg.base_model.cuts) + 1)
                if treatments == ExperimentConfig().treatments:  # the default grid: the file's treatments
                    treatments = [t for t in FILE_TREATMENTS if not get_treatment(t).is_base]
            for name in treatments:
                t = get_treatment(name)
                for n in ([0] if t.is_base else ns):
                    spec = RunSpec(name, n, cfg)
                    # The target task's base net too: every treatment is read against it.
                    for base in (spec.base, RunSpec(f"base{t.target}", 0, cfg)):
                        if base is not None:
                            runs.setdefault(base.run_id, base)
                    runs.setdefault(spec.run_id, spec)
                    if name in exp.controls:  # one control per target, shared by every n and treatment
                        control = RunSpec(control_of(name), 0, cfg)
                        runs.setdefault(control.run_id, control)
        # Table 3: each variant, and the arch as registered to compare with, from scratch on task B.
        for variant in [None, *exp.variants] if exp.variants else []:
            cfg = dataclasses.replace(config, seed=seed, arch=dataclasses.replace(config.arch, variant=variant))
            spec = RunSpec("baseB", 0, cfg)
            runs.setdefault(spec.run_id, spec)
    # Bases that runs copy from, then those runs (frozen ones, which train on cached features and
    # cost a fraction of a fine-tuned one, first), then runs that need no other run's weights (the
    # random control, baseB-long, a target-only base): a grid cut short has used the weights of
    # every base it trained on as many runs as it could, and what is left can be trained anywhere.
    copied = {r.base.run_id for r in runs.values() if r.base is not None}

    def rank(r: RunSpec) -> int:
        if r.run_id in copied:
            return 0
        if r.base is None:
            return 3
        return 2 if get_treatment(r.treatment).fine_tune else 1

    ordered = sorted(runs.values(), key=rank)
    return Plan(ordered, {r.run_id: r.base.run_id if r.base else None for r in ordered})
