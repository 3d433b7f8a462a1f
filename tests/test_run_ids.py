"""Run ids never change: every committed result record's id is what its resolved config hashes to today."""
import json
from pathlib import Path

import pytest

from tfxfer.config import Config
from tfxfer.runs.spec import RunSpec

RECORDS = sorted((Path(__file__).resolve().parent.parent / "docs" / "results").glob("**/result.json"))


def test_there_are_committed_records_to_check():
    assert len(RECORDS) > 100


@pytest.mark.parametrize("path", RECORDS, ids=lambda p: p.parent.name)
def test_a_committed_records_id_is_its_configs_hash(path):
    record = json.loads(path.read_text())
    assert RunSpec.of_record(record).run_id == record["run_id"]


def test_a_longer_runs_record_holds_its_trained_epochs_and_maps_back_to_its_spec():
    config = Config.from_dict({"recipe": {"epochs": 3, "lr_step_epochs": 2}})
    spec = RunSpec("baseB-long", 0, config)
    record = {"treatment": "baseB-long", "n": 0, "config": spec.trained_config.to_dict()}
    assert record["config"]["recipe"]["epochs"] == 6 and record["config"]["recipe"]["lr_step_epochs"] == 4
    assert RunSpec.of_record(record) == spec
    assert RunSpec.of_record(record).run_id == spec.run_id
