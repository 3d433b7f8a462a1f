"""Which tf.distribute strategy a run trains under, and whether this process is the one that writes."""
from __future__ import annotations

import functools
import os

import tensorflow as tf

from tfxfer.config import TrainingConfig
from tfxfer.errors import UserError


def make_strategy(cfg: TrainingConfig) -> tf.distribute.Strategy:
    """auto: MirroredStrategy over the visible GPUs, else the default strategy on one device;
    mirrored: over `devices` (or all GPUs); multiworker: MultiWorkerMirroredStrategy from TF_CONFIG.
    One strategy per process and kind: runs trained one after another (a base, then the treatment
    that copies it; a grid worker's runs) share it, because a second strategy's collectives reuse the
    first one's instance keys and abort with a shape mismatch."""
    return _strategy(cfg.strategy, tuple(cfg.devices) if cfg.devices else None)


@functools.cache
def _strategy(kind: str, devices: tuple[str, ...] | None) -> tf.distribute.Strategy:
    if kind == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise UserError("strategy multiworker needs the TF_CONFIG environment variable (cluster and task)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if kind == "mirrored" or (kind == "auto" and gpus):
        return tf.distribute.MirroredStrategy(devices=devices)
    return tf.distribute.get_strategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Only the chief writes results, logs and the final weights; other workers write to scratch."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_type is None:
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0)


def device_name(strategy: tf.distribute.Strategy) -> str:
    """E.g. 'cpu', '1x NVIDIA H100 80GB HBM3', '2x cpu (2 workers)', for the result record."""
    gpus = tf.config.list_physical_devices("GPU")
    kind = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus else "cpu"
    replicas = strategy.num_replicas_in_sync
    name = kind if replicas == 1 and not gpus else f"{replicas}x {kind}"
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is not None and resolver.task_type is not None:
        cluster = resolver.cluster_spec().as_dict()
        name += f" ({len(cluster.get('chief', [])) + len(cluster.get('worker', []))} workers)"
    return name
