"""`tfxfer tune`: keras-tuner searches of a recipe, resumed, distributed, surviving a dead worker."""
import json
import shutil
import signal
from pathlib import Path

import keras_tuner as kt
import pytest
import tensorflow as tf
from conftest import tiny_config
from helpers import free_ports, tfxfer, write_config
from keras_tuner.engine.trial import TrialStatus
from keras_tuner.src.distribute.oracle_chief import exit_chief

from tfxfer.cli import main
from tfxfer.config import Config, TuningConfig, load_config
from tfxfer.errors import UserError
from tfxfer.experiments.runner import run
from tfxfer.runs.spec import RunSpec
from tfxfer.tuning import tune
from tfxfer.tuning import tuner as tuner_module
from tfxfer.tuning.oracle import RandomOracle
from tfxfer.tuning.space import hyperparameters
from tfxfer.tuning.tuner import OBJECTIVE, make_oracle, project_dir

SPACE = {"lr": {"min": 5e-4, "max": 5e-3, "log": True}, "batch_size": {"values": [16, 32]}}
# keras-tuner's own oracle lock calls deprecated threading names.
pytestmark = pytest.mark.filterwarnings("ignore:.*is deprecated, use current_thread:DeprecationWarning",
                                        "ignore:getName\\(\\) is deprecated:DeprecationWarning")
TUNING = {"space": SPACE, "max_trials": 3, "worker_timeout_s": 4.0}


def trials(project) -> dict:
    """trial_id -> trial.json of every trial keras-tuner recorded."""
    return {t["trial_id"]: t for t in (json.loads(p.read_text()) for p in project.glob("trial_*/trial.json"))}


def run_times(project) -> dict:
    return json.loads((project / "oracle.json").read_text())["run_times"]


def hparams_summaries(logdir) -> list[str]:
    """The HParams plugin's summary kinds in one TensorBoard directory (not its subdirectories)."""
    kinds = []
    for path in logdir.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            kinds += [v.tag for v in event.summary.value if v.metadata.plugin_data.plugin_name == "hparams"]
    return kinds


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    """A random search of 3 one-epoch trials on tiny synthetic data."""
    config = tiny_config(tmp_path_factory.mktemp("search"), recipe={"epochs": 1}, tuning=TUNING)
    return config, tune(config, "baseB", verbose=False)


def test_random_search_scores_trials_on_validation_and_writes_a_usable_config(search):
    config, result = search
    found = trials(result.project_dir)
    assert result.completed == 3 and sorted(found) == ["0", "1", "2"]
    for trial_id, t in found.items():
        assert t["status"] == "COMPLETED"
        (run_dir,) = (result.project_dir / f"trial_{trial_id}").glob("baseB-*")
        history = json.loads((run_dir / "history.json").read_text())
        # The score is the last epoch's validation top-1, not the test top-1 of the result record.
        assert t["score"] == pytest.approx(history[-1]["val_top1"])
        assert 5e-4 <= t["hyperparameters"]["values"]["lr"] <= 5e-3
    best_id = max(found, key=lambda i: found[i]["score"])
    assert result.best_val_top1 == found[best_id]["score"]
    assert result.best_values == found[best_id]["hyperparameters"]["values"]

    best = load_config(str(result.best_config))  # what `tfxfer train --config` reads
    assert best.recipe.lr == result.best_values["lr"] and best.recipe.batch_size == result.best_values["batch_size"]
    assert best.out == config.out and best.recipe.epochs == 1
    record = run(RunSpec("baseB", None, best), verbose=False)
    (trial_run,) = (result.project_dir / f"trial_{best_id}").glob("baseB-*")
    assert record["run_id"] == trial_run.name  # the very network the best trial trained
    assert (Path(config.out) / record["run_id"] / "result.json").is_file() and record["epochs"] == 1


def test_trials_are_logged_to_tensorboard_hparams(search):
    _, result = search
    tb = result.project_dir / "tb"
    assert "_hparams_/experiment" in hparams_summaries(tb)
    for trial_id in ("0", "1", "2"):
        assert "_hparams_/session_start_info" in hparams_summaries(tb / f"trial_{trial_id}")


def test_resuming_keeps_finished_trials_and_reruns_an_interrupted_one(search, tmp_path, monkeypatch):
    config, result = search
    out = tmp_path / "runs"
    shutil.copytree(config.out, out)
    data = config.to_dict()
    data["out"] = str(out)
    ran = []
    real_run = tuner_module.run

    def counting_run(spec, out, **kwargs):
        ran.append(out.name)
        if ran == ["trial_3", "trial_4"]:
            raise KeyboardInterrupt  # Ctrl-C during trial 4
        return real_run(spec, out, **kwargs)

    monkeypatch.setattr(tuner_module, "run", counting_run)
    data["tuning"]["max_trials"] = 5
    with pytest.raises(KeyboardInterrupt):
        tune(Config.from_dict(data), "baseB", verbose=False)
    resumed = tune(Config.from_dict(data), "baseB", verbose=False)
    assert ran == ["trial_3", "trial_4", "trial_4"]  # trials 0-2 never ran again; 4 ran to the end once
    assert resumed.project_dir == out / "tune" / result.project_dir.name and resumed.completed == 5
    assert all(t["status"] == "COMPLETED" for t in trials(resumed.project_dir).values())
    assert run_times(resumed.project_dir) == {str(i): 1 for i in range(5)}


@pytest.mark.parametrize("space, message", [
    ({"learning_rate": {"min": 0.1, "max": 1}}, "config key tuning.space.learning_rate: 'learning_rate' is not allowed"),
    ({"lr": {"values": []}}, "config key tuning.space.lr.values: [] is not allowed; expected a non-empty list"),
    ({"lr": {"min": 0.1, "max": 0.01}}, "config key tuning.space.lr.min: 0.1 is not allowed; expected a number <= max"),
    ({"dropout": {"min": 0.3, "max": 0.3}}, "config key tuning.space.dropout.max: 0.3 is not allowed; expected a number > min (0.3); the range is empty"),
    ({"dropout": {"min": 0.0, "max": 1.5}}, "config key tuning.space.dropout: 1.5 is not a valid recipe.dropout"),
    ({"lr": {"min": 0.0, "max": 0.1, "log": True}}, "config key tuning.space.lr.min: 0.0 is not allowed; expected a number > 0 for a log range"),
    ({"optimizer": {"values": ["sgd", "rmsprop"]}}, "config key tuning.space.optimizer: 'rmsprop' is not a valid recipe.optimizer"),
    ({"lr": {"low": 0.1}}, "config key tuning.space.lr.low does not exist"),
])
def test_bad_search_spaces_are_one_line_errors(space, message):
    with pytest.raises(UserError) as e:
        Config.from_dict({"tuning": {"space": space}})
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_bad_tune_command_exits_2_and_writes_nothing(tmp_path, capsys):
    path = write_config(tmp_path / "bad.yaml", tmp_path / "runs", tuning={"space": {"lr": {"min": 1, "max": 0.1}}})
    with pytest.raises(SystemExit) as exc:
        main(["tune", str(path), "--treatment", "baseB"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("tfxfer: error: config key tuning.space.lr.min: 1")
    for flags, text in ((["--tuner", "grid"], "config key tuning.tuner: 'grid' is not allowed"),
                        (["--max-trials", "0"], "config key tuning.max_trials: 0 is not allowed")):
        good = write_config(tmp_path / "good.yaml", tmp_path / "runs", tuning=TUNING)
        with pytest.raises(SystemExit) as exc:
            main(["tune", str(good), *flags])
        assert exc.value.code == 2 and text in capsys.readouterr().err
    with pytest.raises(UserError, match="hyperband chooses each trial's epochs"):
        tune(tiny_config(tmp_path, tuning={"tuner": "hyperband", "space": {"epochs": {"values": [1, 2]}}}))
    with pytest.raises(UserError, match="dataset.val_fraction"):
        tune(tiny_config(tmp_path, dataset={"val_fraction": 0.0}, tuning=TUNING))
    assert not (tmp_path / "runs").exists()


def test_every_tuner_builds_its_oracle_from_the_space(tmp_path):
    for kind in ("random", "bayesian", "hyperband"):
        config = tiny_config(tmp_path, tuning={**TUNING, "tuner": kind, "max_trials": 7})
        oracle = make_oracle(config)
        assert oracle.max_trials == 7 and [h.name for h in oracle.hyperparameters.space] == ["lr", "batch_size"]
        assert project_dir(RunSpec("baseB", None, config)).name.startswith(f"baseB-{kind}-")


def test_a_silent_worker_loses_its_trial_to_a_live_one(tmp_path):
    """keras-tuner#915: the chief waited forever for a worker that died; here its lease runs out."""
    now = [0.0]
    space = hyperparameters(TuningConfig(space=SPACE))
    oracle = RandomOracle(objective=OBJECTIVE, max_trials=2, hyperparameters=space, seed=1, worker_timeout_s=10,
                          clock=lambda: now[0])
    plain = kt.oracles.RandomSearchOracle(objective=OBJECTIVE, max_trials=2, hyperparameters=space, seed=1)
    for o, name in ((oracle, "leased"), (plain, "plain")):
        o._set_project_dir(str(tmp_path), name)
        doomed, alive = o.create_trial("doomed"), o.create_trial("alive")  # "doomed" then dies, silently
        o.update_trial(alive.trial_id, {"val_top1": 0.5})
        alive.status = TrialStatus.COMPLETED
        o.end_trial(alive)
    assert plain.create_trial("alive").status == TrialStatus.STOPPED
    assert not exit_chief(plain)  # keras-tuner's chief: stuck on "doomed" for good

    assert oracle.create_trial("alive").status == TrialStatus.IDLE  # wait: "doomed" may still finish
    now[0] = 5.0
    assert oracle.create_trial("alive").status == TrialStatus.IDLE and not oracle.search_over()
    now[0] = 11.0  # "doomed" silent for 11 s > 10 s
    assert not oracle.search_over()  # its trial is back in the queue, not lost
    again = oracle.create_trial("alive")
    assert again.trial_id == doomed.trial_id and again.status == TrialStatus.RUNNING
    oracle.update_trial(again.trial_id, {"val_top1": 0.7})
    again.status = TrialStatus.COMPLETED
    oracle.end_trial(again)
    assert oracle.create_trial("alive").status == TrialStatus.STOPPED and oracle.search_over()
    # The presumed-dead worker reporting late changes nothing: the first result stands.
    oracle.update_trial(doomed.trial_id, {"val_top1": 0.9})
    doomed.status = TrialStatus.COMPLETED
    oracle.end_trial(doomed)
    assert oracle.get_trial(doomed.trial_id).score == 0.7 and oracle.end_order == [alive.trial_id, doomed.trial_id]


def start_search(config, port, tuner_id):
    env = {"KERASTUNER_TUNER_ID": tuner_id, "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(port),
           "PYTHONUNBUFFERED": "1"}
    return tfxfer("tune", config, "--treatment", "baseB", "--quiet", env=env)


def finish(procs, timeout=240) -> dict:
    outs = {}
    try:
        for name, p in procs.items():
            out, err = p.communicate(timeout=timeout)
            outs[name] = (p.returncode, out, err)
    finally:
        for p in procs.values():  # a stalled search must not outlive the test
            if p.poll() is None:
                p.kill()
    return outs


def trials_run(outs) -> list[str]:
    """The trial ids the workers say they started, in one list (a trial run twice appears twice)."""
    return sorted(line.split()[3].rstrip(":") for _, out, _ in outs.values() for line in out.splitlines()
                  if line.startswith("tuner ") and "->" in line)


def test_chief_and_two_workers_run_each_of_4_trials_once(tmp_path):
    config = write_config(tmp_path / "tune.yaml", tmp_path / "runs", recipe={"epochs": 1},
                          tuning={**TUNING, "max_trials": 4})
    (port,) = free_ports(1)
    procs = {name: start_search(config, port, name) for name in ("chief", "tuner0", "tuner1")}
    outs = finish(procs)
    assert all(rc == 0 for rc, _, _ in outs.values()), outs
    assert trials_run(outs) == ["0", "1", "2", "3"]
    (project,) = (tmp_path / "runs" / "tune").iterdir()
    assert all(t["status"] == "COMPLETED" for t in trials(project).values()) and len(trials(project)) == 4
    assert run_times(project) == {"0": 1, "1": 1, "2": 1, "3": 1}
    assert "4 trials finished; best trial" in outs["chief"][1] and (project / "best.yaml").is_file()


def test_a_killed_worker_does_not_stall_the_search(tmp_path):
    config = write_config(tmp_path / "tune.yaml", tmp_path / "runs", recipe={"epochs": 1},
                          tuning={**TUNING, "max_trials": 2})
    (port,) = free_ports(1)
    procs = {name: start_search(config, port, name) for name in ("chief", "doomed")}
    for line in procs["doomed"].stdout:  # the only worker so far: it takes a trial, then is killed
        if line.startswith("tuner doomed trial"):
            procs["doomed"].send_signal(signal.SIGKILL)
            break
    procs["survivor"] = start_search(config, port, "survivor")
    outs = finish(procs)
    assert outs["doomed"][0] == -signal.SIGKILL
    assert outs["chief"][0] == 0 and outs["survivor"][0] == 0, outs
    assert "presumed dead; trial" in outs["chief"][1]
    (project,) = (tmp_path / "runs" / "tune").iterdir()
    assert sorted(trials(project)) == ["0", "1"]
    assert all(t["status"] == "COMPLETED" for t in trials(project).values())
    assert trials_run({"survivor": outs["survivor"]}) == ["0", "1"]  # its own and the dead worker's
    assert "2 trials finished; best trial" in outs["chief"][1]
