"""The two base networks of docs/results/byon, as Keras model files a user might hold.

1. A tfxfer base run (cifar8-bn, trained on CIFAR-10 task A of the dissimilar split: vehicles)
   saved as a .keras file: `python make_bases.py cifar8 RUN_DIR OUT.keras`.
2. keras.applications MobileNetV2 (alpha 0.35) at 32x32, trained here from random init on the same
   task A (nothing can be downloaded), with Keras Applications' "tf" preprocessing:
   `python make_bases.py mobilenet CONFIG OUT.keras [EPOCHS]`.

Neither file is committed (they are weights); their sha256 is in every result record.
"""
import sys
import time

import keras
import numpy as np


def save_cifar8(run_dir: str, out: str) -> None:
    from tfxfer.runs.finished import load_run

    finished = load_run(run_dir)
    finished.model.save(out)
    print(f"saved {finished.run_id} ({finished.record['arch']}, top1 {finished.record['top1']:.4f}) as {out}")


def train_mobilenet(config_path: str, out: str, epochs: int = 10) -> None:
    from tfxfer.config import load_config
    from tfxfer.data.pipeline import Normalization, make_dataset
    from tfxfer.data.tasks import load_data, task_data

    config = load_config(config_path)
    # All of task A's images (the experiment caps task B's), as tfxfer's own pipeline makes them
    # (crop, flip), in "tf" preprocessing.
    d = config.to_dict()
    d["dataset"].update(train_per_class=None, test_per_class=None)
    base = config.__class__.from_dict({**d, "base_model": {}})
    data, split, spec = load_data(base)
    task = task_data(base, data, split, spec, task="A")
    norm = Normalization.named("tf", data.train_x)
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), alpha=0.35,
                                           classes=task.num_classes, classifier_activation=None)
    # Keras Applications' batch norm momentum 0.999 is for ImageNet's 10^5+ steps: over this
    # run's ~2000 its moving statistics would still lag the weights (validation at chance).
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    steps = len(task.train_x) // 128
    lr = keras.optimizers.schedules.CosineDecay(0.0, epochs * steps, warmup_target=0.003, warmup_steps=steps)
    model.compile(keras.optimizers.Adam(lr),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    size = {"input_size": 32, "resize_size": 32, "norm": norm}
    val = make_dataset(task.val_x, task.val_y, batch_size=256, training=False, **size)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        train = make_dataset(task.train_x, task.train_y, batch_size=128, training=True, seed=0, epoch=epoch,
                             pad=4, crop=True, flip=True, steps=steps, **size)
        model.fit(train, epochs=epoch + 1, initial_epoch=epoch, validation_data=val, verbose=2)
    test = make_dataset(task.test_x, task.test_y, batch_size=256, training=False, **size)
    _, top1 = model.evaluate(test, verbose=0)
    model.save(out)
    print(f"MobileNetV2 alpha 0.35, task A {task.class_names}: test top-1 {top1:.4f} after {epochs} epochs "
          f"in {time.perf_counter() - t0:.0f} s; saved {out}")


if __name__ == "__main__":
    kind, *args = sys.argv[1:]
    save_cifar8(*args) if kind == "cifar8" else train_mobilenet(args[0], args[1], *map(int, args[2:]))
