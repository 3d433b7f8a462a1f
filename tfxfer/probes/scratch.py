"""The paper's "non-pretrained convnet": the run's architecture and recipe trained from random
initialization on one fold's k images per class, through the ordinary training loop, and scored on
the fold's test images like the linear probes."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from tfxfer.config import Config
from tfxfer.data.pipeline import Normalization
from tfxfer.data.splits import Split
from tfxfer.data.tasks import TaskData
from tfxfer.probes.linear import mean_per_class_accuracy
from tfxfer.probes.targets import Fold, Target
from tfxfer.runs.records import read_result
from tfxfer.runs.spec import RunSpec


def scratch_spec(run, target: Target, fold: Fold, steps: int, out: Path) -> RunSpec:
    """baseA of a task A made of every target class: the base run's arch and recipe, the fold's seed,
    and as many epochs as `steps` SGD steps take on k images per class."""
    n_train = fold.k * len(target.class_names)
    cfg = run.config.to_dict()
    batch = min(cfg["recipe"]["batch_size"], n_train)
    cfg["recipe"].update(batch_size=batch, epochs=math.ceil(steps / max(1, n_train // batch)),
                         early_stopping_patience=None)
    # No validation images: the fold's k per class are all it may learn from.
    cfg["dataset"].update(name=target.dataset, train_per_class=fold.k, val_fraction=0.0)
    cfg["split"] = {"kind": "explicit", "seed": 0, "A": list(target.class_names), "B": None}
    cfg.update(seed=fold.seed, out=str(out))
    return RunSpec("baseA", 0, Config.from_dict(cfg))


def scratch_accuracy(run, target: Target, fold: Fold, steps: int, out: Path, verbose: bool = False) -> float:
    """Mean per-class test accuracy of a network trained from scratch on the fold (reused if trained before)."""
    from tfxfer.runs.finished import load_run
    from tfxfer.training.loop import predict_logits, train

    spec = scratch_spec(run, target, fold, steps, out)
    train_x, train_y = target.images("train")
    test_x, test_y = target.images("test")
    x, y = train_x[fold.train], train_y[fold.train]
    task = TaskData(spec=run.spec, split=Split("explicit", None, tuple(target.class_names), ()), task="A",
                    class_names=tuple(target.class_names), train_x=x, train_y=y, val_x=x[:0], val_y=y[:0],
                    test_x=test_x[fold.test], test_y=test_y[fold.test],
                    # Standardized by its own training images: it sees nothing else.
                    norm=Normalization.of(x), source_classes=len(target.class_names))
    run_dir = Path(out) / spec.run_id
    if read_result(run_dir) is None:
        run_dir.mkdir(parents=True, exist_ok=True)
        train(spec, run_dir, task, verbose=verbose)
    model = load_run(run_dir).model
    # Eagerly: a few hundred test images do not repay tracing a function per scratch network.
    logits = predict_logits(lambda images: model(images, training=False), task.test_x, task)
    return mean_per_class_accuracy(task.test_y, np.argmax(logits, 1), task.num_classes)
