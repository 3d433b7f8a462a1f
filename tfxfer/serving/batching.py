"""Server-side batching: concurrent requests to one signature of one loaded version run as one batch.

A batch closes when it holds `max_batch_size` rows or `timeout_s` after its first request, as TF
Serving's `max_batch_size` / `batch_timeout_micros`. Batches run on a thread pool of
`num_batch_threads`, so the event loop keeps accepting requests while the model computes. A request
larger than a batch runs alone. If a merged batch fails (one request's image does not decode),
each request is rerun alone, so only the faulty one gets the error.
"""
from __future__ import annotations

import asyncio
import dataclasses
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tfxfer.serving.errors import ServingError
from tfxfer.serving.servables import Servable, Signature


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    max_batch_size: int = 32
    timeout_s: float = 0.002
    num_batch_threads: int = 2


@dataclasses.dataclass
class _Open:
    signature: Signature
    items: list = dataclasses.field(default_factory=list)  # (inputs, rows, future)
    rows: int = 0
    timer: asyncio.TimerHandle | None = None


class Batcher:
    def __init__(self, options: BatchingOptions):
        self.options = options
        self.executor = ThreadPoolExecutor(options.num_batch_threads, thread_name_prefix="batch")
        self._open: dict[tuple, _Open] = {}
        self._running: set[asyncio.Task] = set()

    async def run(self, servable: Servable, signature: Signature, inputs: dict[str, np.ndarray]) -> dict:
        rows = signature.check(inputs)
        loop = asyncio.get_running_loop()
        if rows >= self.options.max_batch_size or self.options.timeout_s <= 0:
            return await loop.run_in_executor(self.executor, signature.run, inputs)
        # Only requests whose rows have the same shape can be stacked into one batch.
        key = (id(servable), signature.name, tuple((k, v.shape[1:], v.dtype.str) for k, v in sorted(inputs.items())))
        batch = self._open.get(key)
        if batch is not None and batch.rows + rows > self.options.max_batch_size:
            self._close(key)
            batch = None
        if batch is None:
            batch = self._open[key] = _Open(signature)
            batch.timer = loop.call_later(self.options.timeout_s, self._close, key)
        future = loop.create_future()
        batch.items.append((inputs, rows, future))
        batch.rows += rows
        if batch.rows >= self.options.max_batch_size:
            self._close(key)
        return await future

    def _close(self, key: tuple) -> None:
        batch = self._open.pop(key, None)
        if batch is None:
            return
        batch.timer.cancel()
        task = asyncio.ensure_future(self._execute(batch))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _execute(self, batch: _Open) -> None:
        loop = asyncio.get_running_loop()
        items = batch.items
        merged = (items[0][0] if len(items) == 1 else
                  {k: np.concatenate([inputs[k] for inputs, _, _ in items]) for k in items[0][0]})
        try:
            outputs = await loop.run_in_executor(self.executor, batch.signature.run, merged)
        except Exception as e:  # noqa: BLE001 - handed to the waiting requests, never raised here
            if len(items) == 1 or not isinstance(e, ServingError):
                for _, _, future in items:
                    _settle(future, exception=e)
                return
            # One faulty request spoiled the batch: rerun each alone so only that one fails.
            await asyncio.gather(*(self._execute(_Open(batch.signature, [item], item[1])) for item in items))
            return
        start = 0
        for _, rows, future in items:
            _settle(future, result={k: v[start:start + rows] for k, v in outputs.items()})
            start += rows

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def _settle(future: asyncio.Future, result=None, exception: BaseException | None = None) -> None:
    # A request whose client went away has a cancelled future: nothing to deliver.
    if future.done():
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)
