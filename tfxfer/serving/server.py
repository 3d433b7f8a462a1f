"""`tfxfer serve`: TF Serving's REST and gRPC APIs over an export base, in one asyncio process.

TF Serving itself cannot be installed here (no binary in the package registries, no Docker
engine); this server speaks its protocol on the same export directory, so clients written for TF
Serving (its own Python stubs, curl) work against it unchanged. For production, run the real
tensorflow_model_server as serving/README.md shows.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiohttp import web
from tensorflow_serving.apis import get_model_metadata_pb2

from tfxfer.errors import UserError
from tfxfer.serving.batching import Batcher, BatchingOptions
from tfxfer.serving.errors import invalid
from tfxfer.serving.grpc_api import make_server
from tfxfer.serving.rest import make_app
from tfxfer.serving.servables import ServableManager

log = logging.getLogger("tfxfer.serving")


@dataclasses.dataclass
class Core:
    """What both protocols share: the loaded models and the batcher."""

    manager: ServableManager
    batcher: Batcher
    log: logging.Logger = log

    def metadata(self, name: str, version: int | None,
                 fields: list[str] = ("signature_def",)) -> get_model_metadata_pb2.GetModelMetadataResponse:
        if not fields:
            raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
        unsupported = [f for f in fields if f != "signature_def"]
        if unsupported:
            raise invalid(f"Metadata field {unsupported[0]} is not supported")
        servable = self.manager.get(name, version)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.metadata["signature_def"].Pack(servable.signature_defs)
        return response


def run_server(base: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 8501, grpc_port: int = 8500,
               batching: BatchingOptions | None = None, poll_s: float = 1.0,
               max_body_bytes: int = 64 << 20) -> None:
    """Serve until SIGINT or SIGTERM."""
    base, batching = Path(base), batching or BatchingOptions()
    if not base.is_dir():
        raise UserError(f"export base {str(base)!r} does not exist or is not a directory; create it with "
                        "`tfxfer export RUN_DIR --layers ... --out EXPORT_BASE`")
    for name, value in (("max_batch_size", batching.max_batch_size),
                        ("num_batch_threads", batching.num_batch_threads)):
        if value < 1:
            raise UserError(f"{name} {value} invalid; allowed: a whole number of at least 1")
    if batching.timeout_s < 0 or poll_s <= 0 or max_body_bytes < 1:
        raise UserError("batching timeout_s must be >= 0, poll_s and max_body_bytes > 0")
    asyncio.run(serve(base, host, port, grpc_port, batching, poll_s, max_body_bytes))


async def serve(base: Path, host: str, port: int, grpc_port: int, batching: BatchingOptions, poll_s: float,
                max_body_bytes: int, stop: asyncio.Event | None = None) -> None:
    loop = asyncio.get_running_loop()
    manager = ServableManager(base)
    # One loader thread: loading a new version never competes with itself, nor blocks the requests.
    loader = ThreadPoolExecutor(1, thread_name_prefix="loader")
    for line in await loop.run_in_executor(loader, manager.poll):
        print(line, flush=True)
    core = Core(manager, Batcher(batching))
    runner = web.AppRunner(make_app(core, max_body_bytes), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    grpc_server = None
    try:
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as e:
            raise UserError(f"cannot listen on {host}:{port} (REST): {e.strerror or e}") from None
        try:
            grpc_server = make_server(core, f"[{host}]:{grpc_port}" if ":" in host else f"{host}:{grpc_port}",
                                      max_body_bytes)
        except OSError as e:
            raise UserError(f"cannot listen on {host}:{grpc_port} (gRPC): {e}") from None
        await grpc_server.start()
        models = ", ".join(f"{n} (version {v})" for n, v in sorted(manager.models().items())) or "none yet"
        print(f"serving {base}: REST http://{host}:{port}/v1/models/<name>, gRPC {host}:{grpc_port}; "
              f"models: {models}", flush=True)
        stop = stop or asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # not the main thread (tests), or Windows
                pass
        poller = asyncio.ensure_future(_poll(manager, loader, poll_s))
        await stop.wait()
        poller.cancel()
    finally:
        if grpc_server is not None:
            await grpc_server.stop(grace=1.0)
        await runner.cleanup()
        core.batcher.shutdown()
        loader.shutdown(wait=False, cancel_futures=True)


async def _poll(manager: ServableManager, loader: ThreadPoolExecutor, poll_s: float) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(poll_s)
        try:
            for line in await loop.run_in_executor(loader, manager.poll):
                print(line, flush=True)
        except OSError as e:  # the base vanished for a moment (a move, a network mount): try again
            log.warning("cannot scan %s: %s", manager.base, e)
