"""What a run directory <out>/<run_id>/ holds, by name: every stage that writes or reads one uses these."""

CONFIG_FILE = "config.yaml"  # the resolved config, written first
NORMALIZATION_FILE = "normalization.json"  # the input standardization, so readers preprocess as training did
CHECKPOINTS_DIR = "checkpoints"  # one per epoch; resume starts from the newest
HISTORY_FILE = "history.json"  # per-epoch loss, accuracy, learning rate, speed
TB_DIR = "tb"  # TensorBoard events
WEIGHTS_FILE = "model.weights.h5"  # the final weights, what treatments copy from
RESULT_FILE = "result.json"  # written last, atomically: its presence means "finished"
