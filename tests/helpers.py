"""Running the CLI as a user does: in a fresh process."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import TINY


def write_config(path: Path, out: Path, **sections) -> Path:
    data = {k: dict(v) for k, v in TINY.items()}
    for key, value in sections.items():
        data.setdefault(key, {}).update(value) if isinstance(value, dict) else data.__setitem__(key, value)
    data["out"] = str(out)
    path.write_text(yaml.safe_dump(data))
    return path


def tfxfer(*args, env=None, prelude: str = "", **kwargs) -> subprocess.Popen:
    """Start `tfxfer ARGS` in a new Python process; `prelude` runs first (e.g. to set up devices)."""
    code = f"{prelude}\nfrom tfxfer.cli import main\nmain({list(map(str, args))!r})"
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.Popen([sys.executable, "-c", code], env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def run_tfxfer(*args, timeout=300, **kwargs) -> subprocess.CompletedProcess:
    proc = tfxfer(*args, **kwargs)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def free_ports(k: int) -> list[int]:
    socks = [socket.socket() for _ in range(k)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def tf_config(ports: list[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def only_result(out: Path) -> dict:
    records = [json.loads(p.read_text()) for p in out.glob("*/result.json")]
    assert len(records) == 1, records
    return records[0]


def assert_user_error(capsys, argv: list, message: str, out: Path) -> None:
    """`tfxfer ARGV` in this process exits 2 with `message` on one line of stderr, writing no `out`."""
    import pytest

    from tfxfer.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
