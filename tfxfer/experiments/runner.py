"""Run one RunSpec to completion: reuse a finished run, train the base it copies from first; and
retrain a finished run whose weights were lost, if it reproduces its record."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from tfxfer.data.tasks import arch_spec, load_data, task_data
from tfxfer.errors import UserError
from tfxfer.runs.layout import WEIGHTS_FILE
from tfxfer.runs.records import read_result
from tfxfer.runs.spec import RunSpec
from tfxfer.training.loop import train
from tfxfer.treatments import get_treatment


def weights_lost(run_dir: Path) -> bool:
    """The run finished, but its weights file is not there (records travel without weights)."""
    return read_result(run_dir) is not None and not (run_dir / WEIGHTS_FILE).is_file()


def run(spec: RunSpec, out: str | Path | None = None, loaded=None, verbose: bool = True) -> dict:
    """The run's result record: read back if it finished before, else trained now (resuming)."""
    out = Path(out or spec.config.out)
    run_dir = out / spec.run_id
    done = read_result(run_dir)
    if done is not None:
        print(f"{spec.run_id}: finished before (top1 {done['top1']:.4f}); reusing {run_dir}")
        return done
    base_weights = out / spec.base.run_id / WEIGHTS_FILE if spec.base is not None else None
    if base_weights is not None and weights_lost(base_weights.parent):
        # A finished base whose weights were deleted (or never copied along with its record):
        # training it again would silently change what the dependent runs copy.
        raise UserError(f"{spec.run_id} copies from {spec.base.run_id}, which finished but has no weights "
                        f"({base_weights} is missing): restore that file, retrain it and check it against its "
                        f"record with `tfxfer experiment CONFIG --reproduce-bases`, or move {base_weights.parent} "
                        f"away to train the base again")
    loaded = loaded or load_data(spec.config)
    base_record = None
    if spec.base is not None:
        base_record = read_result(out / spec.base.run_id) or run(spec.base, out, loaded, verbose)
    t = get_treatment(spec.treatment)
    data, split, _ = loaded
    # Loaded data may be shared by the variants of one arch: each has its own layers.
    task = task_data(spec.config, data, split, arch_spec(spec.config), task=t.target, source=t.source)
    run_dir.mkdir(parents=True, exist_ok=True)
    record = train(spec, run_dir, task, base_weights=base_weights,
                   base_run_id=base_record["run_id"] if base_record else None, verbose=verbose)
    print(f"{record['run_id']}: top1 {record['top1']:.4f}  top5 {record['top5']:.4f}  "
          f"({record['epochs']} epochs, {record['wall_s']:.0f} s) -> {run_dir}")
    return record


# What a record without weights_sha256 (older records) is checked on: every measured number.
REPRODUCED = ("top1", "top5", "best_val_top1", "val_top1_last", "train_top1", "epochs")


def reproduce(spec: RunSpec, out: str | Path, loaded=None, verbose: bool = True) -> dict:
    """Retrain the finished run `spec` whose weights file was lost (in <out>/.reproduce/, resuming
    there if cut short) and restore its weights only if the retrained net is the recorded one: the
    same weights_sha256, or for records without it every number in REPRODUCED. Same seed, same
    bits on the same kind of machine and TensorFlow; anything else raises UserError, leaving no
    scratch run behind."""
    out = Path(out)
    recorded = read_result(out / spec.run_id)
    scratch = out / ".reproduce"
    again = run(spec, scratch, loaded, verbose)
    keys = ["weights_sha256"] if recorded.get("weights_sha256") else [k for k in REPRODUCED if k in recorded]
    differ = [k for k in keys if again.get(k) != recorded[k]]
    if not differ:
        os.replace(scratch / spec.run_id / WEIGHTS_FILE, out / spec.run_id / WEIGHTS_FILE)
    shutil.rmtree(scratch / spec.run_id)
    if differ:
        raise UserError(f"{spec.run_id} retrained does not reproduce its record: {differ[0]} {again[differ[0]]} vs "
                        f"{recorded[differ[0]]} recorded (another kind of CPU or GPU, or another TensorFlow, gives "
                        f"other bits), so runs copying it would copy another net; allowed: finish them where its "
                        f"weights are, or move {out / spec.run_id} away to train it and them again")
    print(f"{spec.run_id}: retrained, reproduces its record ({', '.join(keys)}); weights restored")
    return recorded
