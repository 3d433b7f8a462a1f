"""Per-epoch training checkpoints: resume starts from the newest complete one.

tf.train.CheckpointManager writes the checkpoint files first and the `checkpoint` index last, so
an epoch interrupted mid-write is never the one restored. The epoch history is kept beside the
checkpoints (history.json) so a resumed run reports the same record as an uninterrupted one.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import tensorflow as tf

from tfxfer.atomic import atomic_write_text
from tfxfer.runs.layout import CHECKPOINTS_DIR, HISTORY_FILE


class EpochCheckpoints:
    def __init__(self, run_dir: Path, model, optimizer, chief: bool, keep: int = 2):
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        # Keras 3 models are not tracked by tf.train.Checkpoint as objects, so their variables are
        # listed explicitly: weights, the dropout seed generators' states, the optimizer's slots.
        self.checkpoint = tf.train.Checkpoint(model=[v.value for v in model.variables],
                                              optimizer=[v.value for v in optimizer.variables], epoch=self.epoch)
        # Under MultiWorkerMirroredStrategy every worker must save; only the chief's copy is kept.
        directory = run_dir / CHECKPOINTS_DIR if chief else Path(tempfile.mkdtemp(prefix="tfxfer-worker-ckpt-"))
        self.directory = directory
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(directory), max_to_keep=keep)
        self.history_path = run_dir / HISTORY_FILE
        self.chief = chief

    def restore(self) -> list[dict]:
        """Restore the newest checkpoint, if any; return the history of the epochs it covers."""
        if self.manager.latest_checkpoint is None:
            return []
        self.checkpoint.restore(self.manager.latest_checkpoint).assert_existing_objects_matched()
        done = int(self.epoch.numpy())
        history = json.loads(self.history_path.read_text()) if self.history_path.is_file() else []
        return history[:done]

    def save(self, epoch: int, history: list[dict]) -> None:
        self.epoch.assign(epoch)
        # History first: a crash between the two leaves extra history that restore() trims.
        if self.chief:
            atomic_write_text(self.history_path, json.dumps(history, indent=1))
        self.manager.save(checkpoint_number=epoch)

    def discard_scratch(self) -> None:
        """Remove a non-chief worker's scratch checkpoints once training is over."""
        if not self.chief:
            shutil.rmtree(self.directory, ignore_errors=True)
