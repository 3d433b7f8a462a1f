"""Smoke check of an installed (non-editable) tfxfer: run from outside the checkout, as a user does.

Usage: python .ci/smoke.py CHECKOUT, in a venv holding the built wheel, from an empty directory.
Fails (non-zero, naming what) when the installed package lacks a module of the checkout, when any
command's --help fails, or when train -> export -> serve -> one REST request does not work.
"""
import base64
import io
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import requests

import tfxfer
from tfxfer.cli import cli


def sh(*args: str, timeout: float = 300) -> str:
    print("$ tfxfer " + " ".join(args), flush=True)
    res = subprocess.run(["tfxfer", *args], capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        sys.exit(f"smoke: `tfxfer {' '.join(args)}` exited {res.returncode}:\n{res.stdout}{res.stderr}")
    return res.stdout


def command_paths(group, prefix=()):
    """Every command of the click group, nested groups too, as argument tuples."""
    for name, command in group.commands.items():
        yield (*prefix, name)
        if hasattr(command, "commands"):
            yield from command_paths(command, (*prefix, name))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(checkout: Path) -> None:
    installed = Path(tfxfer.__file__).resolve().parent
    if checkout in installed.parents:
        sys.exit(f"smoke: tfxfer is imported from the checkout ({installed}), not from the installed wheel")
    # Every module of the checkout must be in the wheel: a package left out shows here by name.
    missing = [str(p.relative_to(checkout)) for p in sorted((checkout / "tfxfer").rglob("*.py"))
               if not (installed / p.relative_to(checkout / "tfxfer")).is_file()]
    if missing:
        sys.exit(f"smoke: the installed package ({installed}) lacks {len(missing)} module(s): {', '.join(missing)}")

    for args in [(), *command_paths(cli)]:
        usage = sh(*args, "--help").splitlines()[0]
        if not usage.startswith(f"Usage: tfxfer {' '.join(args)}".rstrip()):
            sys.exit(f"smoke: `tfxfer {' '.join(args)} --help` printed {usage!r}")

    sh("train", "--treatment", "baseB", "--epochs", "1", "--out", "runs", "--quiet")
    (run_dir,) = [p.parent for p in Path("runs").glob("*/result.json")]
    sh("export", str(run_dir), "--layers", "conv5,fc7", "--out", "exports", "--name", "feat",
       "--serving-config", "exports/models.config")

    port, grpc_port = free_port(), free_port()
    log = Path("serve.log")
    server = subprocess.Popen(["tfxfer", "serve", "exports", "--port", str(port), "--grpc-port", str(grpc_port)],
                              stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/v1/models/feat"
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"smoke: tfxfer serve did not come up:\n{log.read_text()}")
            try:
                if requests.get(url, timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.5)
        png = io.BytesIO()
        plt.imsave(png, np.random.default_rng(0).random((32, 32, 3)), format="png")
        body = {"instances": [{"b64": base64.b64encode(png.getvalue()).decode()}]}
        reply = requests.post(f"{url}:predict", data=json.dumps(body), timeout=60)
        fc7 = np.asarray(reply.json()["predictions"][0]["fc7"]) if reply.status_code == 200 else None
        if fc7 is None or fc7.ndim != 1 or not len(fc7) or not np.isfinite(fc7).all():
            sys.exit(f"smoke: POST {url}:predict answered {reply.status_code}: {reply.text[:500]}")
        print(f"smoke: REST predict returned fc7 features [{len(fc7)}]")
    finally:
        server.terminate()
        server.wait(timeout=30)
    print("smoke: ok")


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
