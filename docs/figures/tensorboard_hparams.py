"""Screenshot of TensorBoard's HParams dashboard over a grid's runs, as a browser shows it.

    tfxfer experiment configs/quickstart.yaml --out /tmp/qsgrid --quiet
    python docs/figures/tensorboard_hparams.py /tmp/qsgrid docs/figures/tensorboard_hparams.png

Starts `tensorboard --logdir RUNS` on a free loopback port, opens its HParams dashboard in headless
Chromium (Debian's `chromium` package) driven over the DevTools protocol, keeps the columns a reader
of a transfer grid wants (the treatment, n, split and the validation top-1), switches to VIEW (table
or parallel coordinates) and writes a PNG. Both processes are stopped when it ends.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

# The HParams columns shown; the dashboard's other hparams and metrics are unchecked.
KEEP = ("treatment", "n", "split_seed", "val_top1")
VIEWS = {"table": "TABLE VIEW", "parallel": "PARALLEL COORDINATES VIEW"}

# Elements of TensorBoard's Polymer/Angular app live in nested shadow roots: search them all.
FIND = """
function* all(root) { for (const el of root.querySelectorAll('*')) { yield el; if (el.shadowRoot) yield* all(el.shadowRoot); } }
"""
SETUP = FIND + """
(() => {
  const keep = new Set(%(keep)s), columns = new Set(%(columns)s);
  let changed = 0;
  for (const box of [...all(document)].filter(e => e.tagName === 'PAPER-CHECKBOX')) {
    const label = box.textContent.trim();
    if (!columns.has(label)) continue;  // a value's filter (e.g. one treatment), not a column
    if (box.checked !== keep.has(label)) { box.click(); changed++; }
  }
  const tab = [...all(document)].find(e => e.tagName === 'PAPER-TAB' && e.textContent.trim().toUpperCase() === %(view)s);
  if (tab) tab.click();
  return JSON.stringify({changed, tab: !!tab});
})()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_json(url: str, ok, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                value = json.loads(r.read())
            if ok(value):
                return value
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} did not answer as expected in {timeout_s:.0f} s")


async def cdp(ws_url: str, page_url: str, columns: list[str], view: str, out: Path, size: tuple[int, int]) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, max_msg_size=0) as ws:
        ids = iter(range(1, 1 << 30))

        async def call(method, **params):
            i = next(ids)
            await ws.send_json({"id": i, "method": method, "params": params})
            async for msg in ws:
                data = json.loads(msg.data)
                if data.get("id") == i:
                    if "error" in data:
                        raise RuntimeError(f"{method}: {data['error']}")
                    return data["result"]

        async def evaluate(expr):
            return (await call("Runtime.evaluate", expression=expr, returnByValue=True))["result"].get("value")

        await call("Emulation.setDeviceMetricsOverride", width=size[0], height=size[1], deviceScaleFactor=1,
                   mobile=False)
        await call("Page.navigate", url=page_url)
        for _ in range(120):  # the dashboard loads its experiment, then draws the tabs
            await asyncio.sleep(0.5)
            found = await evaluate(FIND + "[...all(document)].filter(e => e.tagName === 'PAPER-TAB').length")
            if found and found >= 3:
                break
        await asyncio.sleep(3)
        print(await evaluate(SETUP % {"keep": json.dumps(list(KEEP)), "columns": json.dumps(columns),
                                      "view": json.dumps(VIEWS[view])}))
        await asyncio.sleep(5)  # the view redraws with the chosen columns
        shot = await call("Page.captureScreenshot", format="png")
        out.write_bytes(base64.b64decode(shot["data"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, help="The grid's output directory (tensorboard --logdir)")
    parser.add_argument("out", type=Path, help="The PNG to write")
    parser.add_argument("--view", choices=list(VIEWS), default="table")
    parser.add_argument("--size", type=int, nargs=2, default=(1400, 900), metavar=("WIDTH", "HEIGHT"))
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    args = parser.parse_args()
    runs = {f"{p.parent.name}/tb" for p in args.runs.glob("*/result.json")}
    if not runs:
        raise SystemExit(f"{args.runs} holds no finished runs")
    tb_port, cdp_port = free_port(), free_port()
    exe = shutil.which("tensorboard", path=str(Path(sys.executable).parent)) or "tensorboard"
    procs = [subprocess.Popen([exe, "--logdir", str(args.runs), "--host", "127.0.0.1", "--port", str(tb_port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        tb = f"http://127.0.0.1:{tb_port}"
        wait_json(f"{tb}/data/runs", lambda listed: runs <= set(listed), 300)
        request = urllib.request.Request(f"{tb}/data/plugin/hparams/experiment", data=b'{"experimentName": ""}',
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as r:
            experiment = json.loads(r.read())
        columns = [h["name"] for h in experiment["hparamInfos"]] + [m["name"]["tag"] for m in experiment["metricInfos"]]
        with tempfile.TemporaryDirectory() as profile:
            procs.append(subprocess.Popen(
                [args.chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                 f"--remote-debugging-port={cdp_port}", f"--user-data-dir={profile}",
                 f"--window-size={args.size[0]},{args.size[1]}", "about:blank"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            pages = wait_json(f"http://127.0.0.1:{cdp_port}/json/list",
                              lambda ps: any(p.get("type") == "page" for p in ps), 60)
            ws_url = next(p["webSocketDebuggerUrl"] for p in pages if p.get("type") == "page")
            asyncio.run(cdp(ws_url, f"{tb}/#hparams", columns, args.view, args.out, tuple(args.size)))
        print(f"wrote {args.out}")
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
