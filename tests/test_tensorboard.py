"""TensorBoard as a user sees it: `tensorboard --logdir` over a small grid's runs, read through the
HTTP data API its web page uses (the run list, the scalars dashboard, the HParams dashboard)."""
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from helpers import free_ports, write_config

# baseB and BnB2: a base net and a net that copies 2 of its layers.
GRID = {"splits": [{"kind": "random", "seed": 1}], "treatments": ["BnB"], "n": [2]}
EPOCHS = 2
SCALARS = {"train_loss", "train_top1", "val_loss", "val_top1", "lr", "images_per_s"}
HPARAMS = ("treatment", "n", "split", "split_seed", "seed", "arch", "dataset")
START_S = 180  # after the grid has trained; bounded, on a busy 2-core machine too


class TensorBoard:
    def __init__(self, url: str):
        self.url = url

    def get(self, route: str, **query):
        return self._read(urllib.request.Request(f"{self.url}{route}?{urllib.parse.urlencode(query)}"))

    def post(self, route: str, body: dict):
        return self._read(urllib.request.Request(f"{self.url}{route}", data=json.dumps(body).encode(),
                                                 headers={"Content-Type": "application/json"}))

    @staticmethod
    def _read(request):
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """`tensorboard --logdir RUNS` on a free loopback port, watching a small grid train there, as a
    user watches one; yields the runs directory, the runs' records and TensorBoard once it lists every
    run with its scalars. TensorBoard is stopped after, whatever happened."""
    from tfxfer.experiments.experiment import run_experiment

    tmp = tmp_path_factory.mktemp("tb_grid")
    runs = tmp / "runs"
    runs.mkdir()
    (port,) = free_ports(1)
    exe = shutil.which("tensorboard", path=str(Path(sys.executable).parent))
    command = [exe] if exe else [sys.executable, "-m", "tensorboard.main"]
    log = tmp / "tensorboard.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([*command, "--logdir", str(runs), "--host", "127.0.0.1", "--port", str(port),
                                 "--reload_interval", "1"],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        # TensorBoard starts (it imports TensorFlow: seconds) while the grid trains.
        config = write_config(tmp / "c.yaml", runs, experiment=GRID, recipe={"epochs": EPOCHS})
        run_experiment(str(config), verbose=False)
        records = {p.parent.name: json.loads(p.read_text()) for p in runs.glob("*/result.json")}
        assert len(records) == 2, records
        board = TensorBoard(f"http://127.0.0.1:{port}")
        want = {f"{run_id}/tb" for run_id in records}
        deadline = time.monotonic() + START_S
        while True:
            assert proc.poll() is None, f"tensorboard exited {proc.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"tensorboard did not list {want} in {START_S} s:\n{log.read_text()}"
            try:
                # It rescans the logdir every few seconds: runs appear, then their events, and a scan
                # during training may have read a run's first epochs only; wait for every epoch.
                tags = board.get("/data/plugin/scalars/tags")
                if want <= set(board.get("/data/runs")) and all(SCALARS <= set(tags.get(run, {})) for run in want) \
                        and all(len(board.get("/data/plugin/scalars/scalars", run=run, tag="val_top1")) == EPOCHS
                                for run in want):
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.5)
        yield runs, records, board
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_scalars_dashboard_has_every_runs_epochs(grid):
    runs, records, tensorboard = grid
    assert set(tensorboard.get("/data/runs")) == {f"{run_id}/tb" for run_id in records}
    for run_id in records:
        history = json.loads((runs / run_id / "history.json").read_text())
        points = tensorboard.get("/data/plugin/scalars/scalars", run=f"{run_id}/tb", tag="val_top1")
        assert [step for _, step, _ in points] == list(range(1, EPOCHS + 1))
        assert [value for _, _, value in points] == pytest.approx([h["val_top1"] for h in history], abs=1e-6)


def test_hparams_dashboard_has_each_runs_hparams_and_metrics(grid):
    runs, records, tensorboard = grid
    experiment = tensorboard.post("/data/plugin/hparams/experiment", {"experimentName": ""})
    hparams = {h["name"] for h in experiment["hparamInfos"]}
    metrics = {m["name"]["tag"] for m in experiment["metricInfos"]}
    assert set(HPARAMS) <= hparams and SCALARS <= metrics, experiment
    # The request the HParams table view sends: every hparam and metric as a column, every session.
    columns = ([{"hparam": name, "includeInResult": True} for name in sorted(hparams)]
               + [{"metric": m["name"], "includeInResult": True} for m in experiment["metricInfos"]])
    response = tensorboard.post("/data/plugin/hparams/session_groups", {
        "experimentName": "", "colParams": columns, "startIndex": 0, "sliceSize": 100,
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]})
    groups = {g["hparams"]["run_id"]: g for g in response["sessionGroups"]}
    assert set(groups) == set(records)
    for run_id, record in records.items():
        group = groups[run_id]
        assert [s["name"] for s in group["sessions"]] == [f"{run_id}/tb"]
        assert {k: group["hparams"][k] for k in HPARAMS} == {k: record[k] for k in HPARAMS}
        last = {m["name"]["tag"]: (m["trainingStep"], m["value"]) for m in group["metricValues"]}
        assert set(last) == SCALARS
        history = json.loads((runs / run_id / "history.json").read_text())
        assert last["val_top1"] == (EPOCHS, pytest.approx(history[-1]["val_top1"], abs=1e-6))
