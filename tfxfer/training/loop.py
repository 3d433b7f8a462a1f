"""The training loop: one custom `strategy.run` step for every strategy.

Keras 3's `model.fit` does not run under MultiWorkerMirroredStrategy, so the same loop serves the
default strategy, MirroredStrategy and MultiWorkerMirroredStrategy. Steps run in chunks inside one
tf.function (like `steps_per_execution`), between which the progress bar updates.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tfxfer import __version__
from tfxfer.atomic import atomic_write_text
from tfxfer.config import Config, RecipeConfig, dump_config
from tfxfer.data.pipeline import fixed_views, make_dataset, make_feature_dataset
from tfxfer.data.tasks import TaskData
from tfxfer.models import LAYER_NAMES, build_model, external
from tfxfer.progress import Bar
from tfxfer.runs.layout import CONFIG_FILE, NORMALIZATION_FILE, TB_DIR, WEIGHTS_FILE
from tfxfer.runs.records import weights_sha256, write_result
from tfxfer.runs.spec import RunSpec
from tfxfer.training import prefix_cache
from tfxfer.training.precision import warn_if_emulated
from tfxfer.training.checkpoints import EpochCheckpoints
from tfxfer.training.strategy import device_name, is_chief, make_strategy
from tfxfer.training.tensorboard import RunLogger
from tfxfer.treatments import build_file_treatment, build_treatment, frozen_layers, get_treatment

EVAL_BATCH = 256
LAST_EPOCHS = 3  # the record keeps the validation top-1 of this many last epochs, to judge convergence


@keras.saving.register_keras_serializable(package="tfxfer")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """A linear warm-up from 0 to `peak` over `warmup_steps`, then a cosine or linear decay to 0
    at `total_steps` (linear: the one-cycle schedule of fast CIFAR training)."""

    def __init__(self, peak: float, warmup_steps: int, total_steps: int, shape: str = "cosine"):
        self.peak, self.warmup_steps, self.total_steps, self.shape = float(peak), int(warmup_steps), \
            int(total_steps), shape

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = step / max(self.warmup_steps, 1)
        done = tf.clip_by_value((step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1), 0.0, 1.0)
        decay = 0.5 * (1.0 + tf.cos(np.pi * done)) if self.shape == "cosine" else 1.0 - done
        return self.peak * tf.where(step < self.warmup_steps, warm, decay)

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps,
                "shape": self.shape}


def learning_rate(recipe: RecipeConfig, steps_per_epoch: int):
    """The recipe's schedule: step decay ×lr_decay every lr_step_epochs (default: at 50 % and 75 %
    of training), or a warm-up then a cosine or linear decay to 0 at the last step."""
    if recipe.schedule != "step":
        return WarmupDecay(recipe.lr, round(recipe.warmup_epochs * steps_per_epoch), recipe.epochs * steps_per_epoch,
                           recipe.schedule)
    if recipe.lr_step_epochs:
        epochs = list(range(recipe.lr_step_epochs, recipe.epochs, recipe.lr_step_epochs))
    else:
        epochs = sorted({e for e in (recipe.epochs // 2, (3 * recipe.epochs) // 4) if 0 < e < recipe.epochs})
    if not epochs:
        return recipe.lr
    return keras.optimizers.schedules.PiecewiseConstantDecay(
        [e * steps_per_epoch for e in epochs], [recipe.lr * recipe.lr_decay ** i for i in range(len(epochs) + 1)])


def make_optimizer(recipe: RecipeConfig, steps_per_epoch: int):
    lr = learning_rate(recipe, steps_per_epoch)
    if recipe.optimizer == "adam":
        opt = keras.optimizers.Adam(lr)
    else:
        opt = keras.optimizers.SGD(lr, momentum=recipe.momentum, nesterov=recipe.nesterov)
    return keras.optimizers.LossScaleOptimizer(opt) if recipe.precision == "mixed_float16" else opt


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def inference(model):
    """The model's forward pass in inference mode, traced once (the last batch may be smaller)."""
    return tf.function(lambda images: model(images, training=False), reduce_retracing=True)


def predict_logits(forward, x: np.ndarray, task: TaskData) -> np.ndarray:
    ds = make_dataset(x, np.zeros(len(x), np.int64), input_size=task.spec.input_size,
                      resize_size=task.spec.resize_size, norm=task.norm, batch_size=EVAL_BATCH, training=False)
    return np.concatenate([forward(images).numpy() for images, _ in ds])


def evaluate(forward, x, y, task: TaskData) -> dict[str, float]:
    return scores(predict_logits(forward, x, task), y)


def scores(logits: np.ndarray, y: np.ndarray) -> dict[str, float]:
    loss = float(np.mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)))
    return {"loss": loss, "top1": topk_accuracy(logits, y, 1), "top5": topk_accuracy(logits, y, 5)}


def _build(spec: RunSpec, task: TaskData, base_weights: Path | None):
    """The run's network, and the digest of the base weights it copies (None when it copies none)."""
    cfg = spec.trained_config
    if cfg.base_model.path is not None:
        return build_file_treatment(spec.treatment, spec.n, cfg.base_model, cfg.recipe, task.num_classes,
                                    seed=cfg.seed), None
    kwargs = dict(dropout=cfg.recipe.dropout, weight_decay=cfg.recipe.weight_decay,
                  renorm_radius=cfg.arch.renorm_radius, dtype_policy=cfg.recipe.precision)
    base = None
    if base_weights is not None:
        base = build_model(task.spec, task.source_classes, **kwargs)
        base.load_weights(base_weights)
    model = build_treatment(spec.treatment, spec.n, task.spec, task.num_classes, base=base, seed=cfg.seed, **kwargs)
    return model, weights_sha256(base) if base is not None else None


def suffix_model(model: keras.Model, n: int) -> keras.Model:
    """Layers n+1..8 of `model` as a model whose input is layer n's output: what a frozen
    treatment trains on cached prefix outputs. The layer objects are `model`'s own, so training
    it trains `model`, and checkpoints and weights files stay those of the full network."""
    last = model.get_layer(LAYER_NAMES[n - 1])
    inputs = keras.Input(last.output.shape[1:], dtype="float16", name=f"{last.name}_outputs")
    x = inputs
    if getattr(last, "drop", None) is not None:
        # A frozen fc6/fc7 still drops out its outputs in training; the cache holds them as in inference.
        x = last.drop(x)
    for name in LAYER_NAMES[n:]:
        x = model.get_layer(name)(x)
    return keras.Model(inputs, x, name=f"{model.name}_above_{last.name}")


def _prefix_features(model: keras.Model, n: int, task: TaskData, cfg: Config, out: Path, label: str):
    """Cached outputs of the frozen layers 1..n: of every fixed view of the training images, and
    of the validation images as evaluation sees them; and the seconds it took to get them."""
    budget = cfg.training.prefix_cache_gb
    common = {"spec": task.spec, "norm": task.norm, "root": prefix_cache.cache_dir(out), "label": label,
              "max_bytes": None if budget is None else int(budget * 2**30)}
    size = {"input_size": task.spec.input_size, "resize_size": task.spec.resize_size}
    aug = cfg.recipe.augment
    t0 = time.perf_counter()
    train_views = fixed_views(**size, pad=aug.pad, crop=aug.crop, flip=aug.flip)
    train_x, _ = prefix_cache.prefix_outputs(model, n, task.train_x, train_views, **common)
    val_x = prefix_cache.prefix_outputs(model, n, task.val_x, fixed_views(**size), **common)[0][:, 0] \
        if len(task.val_x) else None
    return train_x, val_x, time.perf_counter() - t0


def train(spec: RunSpec, run_dir: Path, task: TaskData, base_weights: Path | None = None,
          base_run_id: str | None = None, verbose: bool = True) -> dict:
    """Train one run to completion (resuming from its last checkpoint) and write its result record."""
    cfg = spec.trained_config  # the experiment's config, with the epochs of a run trained longer
    recipe = cfg.recipe
    keras.utils.set_random_seed(cfg.seed)
    strategy = make_strategy(cfg.training)
    chief = is_chief(strategy)
    if chief:
        warn_if_emulated(recipe.precision)
        atomic_write_text(run_dir / CONFIG_FILE, dump_config(cfg))
        # Export and analysis tools preprocess exactly as training did, without reloading the data.
        atomic_write_text(run_dir / NORMALIZATION_FILE, json.dumps(dataclasses.asdict(task.norm)))

    global_batch = recipe.batch_size
    if global_batch % strategy.num_replicas_in_sync:
        global_batch += strategy.num_replicas_in_sync - global_batch % strategy.num_replicas_in_sync
    steps_per_epoch = max(1, len(task.train_x) // global_batch)

    # Frozen layers 1..n never change: train layers n+1..8 on their cached outputs.
    frozen = len(frozen_layers(get_treatment(spec.treatment), spec.n))
    # A model file's frozen prefix is not cached (yet): every epoch runs it, in inference mode.
    byon = cfg.base_model.path is not None
    cached = cfg.training.prefix_cache and frozen > 0 and not byon
    with strategy.scope():
        model, base_digest = _build(spec, task, base_weights)
        learner = suffix_model(model, frozen) if cached else model
        optimizer = make_optimizer(recipe, steps_per_epoch)
        optimizer.build(learner.trainable_variables)
        checkpoints = EpochCheckpoints(run_dir, model, optimizer, chief)
    history = checkpoints.restore()
    if history and chief:
        print(f"{spec.run_id}: resuming after epoch {len(history)} of {recipe.epochs}")

    forward = inference(model)
    cache_s = 0.0
    if cached:
        train_features, val_features, cache_s = _prefix_features(
            model, frozen, task, cfg, run_dir.parent, label=base_run_id or f"{spec.treatment}-seed{cfg.seed}")
        forward_learner = inference(learner)
    scale_loss = recipe.precision == "mixed_float16"
    smoothing = recipe.label_smoothing

    def step(images, labels):
        with tf.GradientTape() as tape:
            logits = learner(images, training=True)
            if smoothing:
                per_example = keras.losses.categorical_crossentropy(
                    tf.one_hot(labels, task.num_classes), logits, from_logits=True, label_smoothing=smoothing)
            else:
                per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            if learner.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(learner.losses))
            scaled = optimizer.scale_loss(loss) if scale_loss else loss
        grads = tape.gradient(scaled, learner.trainable_variables)
        optimizer.apply_gradients(zip(grads, learner.trainable_variables))
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, 1), labels), tf.float32))
        return tf.reduce_sum(per_example), correct

    @tf.function
    def train_chunk(iterator, steps):
        totals = tf.zeros(2)
        for _ in tf.range(steps):
            loss_sum, correct = strategy.run(step, args=next(iterator))
            totals += tf.stack([strategy.reduce("SUM", loss_sum, axis=None), strategy.reduce("SUM", correct, axis=None)])
        return totals

    if not cached:  # one tensor for every epoch's dataset to gather from
        train_images, train_labels = tf.convert_to_tensor(task.train_x), tf.convert_to_tensor(task.train_y)

    def dataset_fn(epoch):
        def fn(ctx: tf.distribute.InputContext):
            batch, shard = ctx.get_per_replica_batch_size(global_batch), (ctx.num_input_pipelines, ctx.input_pipeline_id)
            # A pipeline feeds each of its replicas a batch per step.
            steps = steps_per_epoch * ctx.num_replicas_in_sync // ctx.num_input_pipelines
            if cached:
                return make_feature_dataset(train_features, task.train_y, batch_size=batch, seed=cfg.seed,
                                            epoch=epoch, shard=shard, steps=steps)
            return make_dataset(train_images, train_labels, input_size=task.spec.input_size,
                                resize_size=task.spec.resize_size, norm=task.norm, batch_size=batch, training=True,
                                seed=cfg.seed, epoch=epoch, pad=recipe.augment.pad, crop=recipe.augment.crop,
                                flip=recipe.augment.flip, shard=shard, steps=steps)
        return strategy.distribute_datasets_from_function(fn)

    def validate() -> dict:
        if not len(task.val_x):
            return {}
        if cached:
            batches = tf.data.Dataset.from_tensor_slices(val_features).batch(EVAL_BATCH)
            return scores(np.concatenate([forward_learner(x).numpy() for x in batches]), task.val_y)
        return evaluate(forward, task.val_x, task.val_y, task)

    hparams = {"run_id": spec.run_id, "treatment": spec.treatment, "n": spec.n, "dataset": cfg.dataset.name,
               "arch": task.spec.name, "split": task.split.kind, "split_seed": task.split.seed or 0,
               "seed": cfg.seed, "lr": recipe.lr, "batch_size": recipe.batch_size, "precision": recipe.precision}
    logger = RunLogger(run_dir / TB_DIR, hparams if not history else None, enabled=chief)
    # Steps run in chunks inside one traced call; the progress bar, when shown, updates between them.
    chunk = min(steps_per_epoch, 10) if verbose and chief else steps_per_epoch
    for epoch in range(len(history), recipe.epochs):
        if recipe.early_stopping_patience and _stalled(history, recipe.early_stopping_patience):
            break
        bar = Bar(steps_per_epoch, f"{spec.run_id} epoch {epoch + 1}/{recipe.epochs}", enabled=verbose and chief)
        t_epoch = time.perf_counter()
        iterator = iter(dataset_fn(epoch))
        totals, done, t0 = np.zeros(2), 0, time.perf_counter()
        while done < steps_per_epoch:
            k = min(chunk, steps_per_epoch - done)
            totals += train_chunk(iterator, tf.constant(k)).numpy()
            done += k
            seen = done * global_batch
            bar.update(done, loss=totals[0] / seen, top1=totals[1] / seen)
        epoch_s = time.perf_counter() - t0
        val = validate()
        scalars = {"train_loss": totals[0] / seen, "train_top1": totals[1] / seen, "val_loss": val.get("loss"),
                   "val_top1": val.get("top1"), "lr": float(optimizer.learning_rate.numpy()),
                   "images_per_s": seen / epoch_s}
        logger.epoch(epoch + 1, {k: v for k, v in scalars.items() if v is not None},
                     None if byon else model.get_layer("conv1").get_weights()[0])
        # The prefix cache is read (or built) once per process, before its first epoch.
        history.append({"epoch": epoch + 1, **scalars, "images": seen, "train_s": epoch_s,
                        "wall_s": time.perf_counter() - t_epoch + cache_s, "prefix_cache_s": cache_s,
                        "traces": train_chunk.experimental_get_tracing_count()})
        cache_s = 0.0
        checkpoints.save(epoch + 1, history)
        # One line per epoch, on a terminal (in place of the bar) or not.
        bar.close(f"{bar.label}: loss {scalars['train_loss']:.4f}  top1 {scalars['train_top1']:.4f}  "
                  f"val top1 {val.get('top1', float('nan')):.4f}  lr {scalars['lr']:g}  "
                  f"{scalars['images_per_s']:.0f} img/s" if verbose and chief else None)

    t_test = time.perf_counter()
    test = evaluate(forward, task.test_x, task.test_y, task)
    # Table 3's train top-1, measured honestly: the training images without augmentation or dropout
    # (the running accuracy of the epochs saw augmented images and dropout). Base nets only.
    train_top1 = evaluate(forward, task.train_x, task.train_y, task)["top1"] if get_treatment(spec.treatment).is_base \
        else None
    wall_s = sum(h["wall_s"] for h in history) + time.perf_counter() - t_test
    train_s = sum(h["train_s"] for h in history)
    checkpoints.discard_scratch()
    val_top1 = [h["val_top1"] for h in history if h["val_top1"] is not None]
    record = {
        "run_id": spec.run_id, "treatment": spec.treatment, "n": spec.n, "base_run_id": base_run_id,
        "dataset": cfg.dataset.name, "arch": task.spec.name, "split": task.split.kind,
        "split_seed": task.split.seed, "split_hash": task.split.hash, "classes": list(task.class_names),
        "seed": cfg.seed, "top1": test["top1"], "top5": test["top5"],
        "best_val_top1": max(val_top1) if val_top1 else None, "val_top1_last": val_top1[-LAST_EPOCHS:],
        "train_top1": train_top1, "epochs": len(history),
        "wall_s": round(wall_s, 3), "images_per_s": round(sum(h["images"] for h in history) / train_s, 2),
        "precision": recipe.precision, "device": device_name(strategy), "version": __version__,
        "config": cfg.to_dict(),
        # A model file's runs: the layer cut n names, and the file's content hash.
        "cut": external.cut_of(cfg.base_model, spec.n) if byon else None, "base_model_sha256": cfg.base_model.sha256,
        "weights_sha256": weights_sha256(model), "base_weights_sha256": base_digest,
    }
    if chief:
        _save_weights(model, run_dir / WEIGHTS_FILE)
        write_result(run_dir, record)
    return record


def _stalled(history: list[dict], patience: int) -> bool:
    vals = [h["val_top1"] for h in history]
    if len(vals) <= patience or any(v is None for v in vals):
        return False
    return max(vals[-patience:]) <= max(vals[:-patience])


def _save_weights(model, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.tmp.weights.h5")
    model.save_weights(tmp)
    tmp.replace(path)
