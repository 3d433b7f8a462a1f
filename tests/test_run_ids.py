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
    assert RunSpec(record["treatment"], record["n"], Config.from_dict(record["config"])).run_id == record["run_id"]
