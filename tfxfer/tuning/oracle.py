"""keras-tuner oracles that survive a dying worker, and the chief's server loop.

keras-tuner's chief waits until every worker it has seen asks for a trial again and every trial it
handed out is ended (keras-tuner#915). A worker that dies — killed, out of memory, a gRPC error —
does neither, so the chief waits forever and the dead worker's trial is never run. Here each worker
holds a lease: any call it makes (asking for a trial, ending one, and a heartbeat every few seconds
while it trains) renews it. A worker silent for `worker_timeout_s` is presumed dead: it is forgotten
and its trial goes back to the queue for the next worker that asks. Workers that run out of new
trials wait while others are still running, so a trial put back late still finds someone to run it.
If a presumed-dead worker reports after all, the first result of a trial counts and later ones are
dropped. The chief ends once the search is complete and every live worker was told so; if all
workers die before that, it waits for new ones (any worker started again continues the search).
"""
from __future__ import annotations

import os
import time
from concurrent import futures

import grpc
import keras_tuner as kt
from keras_tuner.engine.trial import Trial, TrialStatus

from tfxfer.errors import UserError


class LeasedOracle:
    """Mixin over a keras-tuner oracle: worker leases, requeueing, waiting for running trials."""

    def __init__(self, *args, worker_timeout_s: float, clock=time.monotonic, **kwargs):
        super().__init__(*args, **kwargs)
        self.worker_timeout_s = worker_timeout_s
        self.clock = clock
        self._seen: dict[str, float] = {}  # tuner_id -> when it last called
        self._holder: dict[str, str] = {}  # trial_id -> tuner_id that was handed it last
        self._complete = False  # a worker was told the search is over

    def _renew(self, tuner_id: str | None) -> None:
        if tuner_id is not None:
            self._seen[tuner_id] = self.clock()

    def _expire(self) -> None:
        now = self.clock()
        for tuner_id in sorted(self.tuner_ids):
            if now - self._seen.get(tuner_id, now) <= self.worker_timeout_s:
                continue
            self.tuner_ids.discard(tuner_id)
            trial = self.ongoing_trials.pop(tuner_id, None)
            lost = ""
            if trial is not None:
                self._retry_queue.append(trial.trial_id)
                lost = f"; trial {trial.trial_id} goes back to the queue"
                self.save()
            print(f"tuner {tuner_id}: silent for {now - self._seen[tuner_id]:.0f} s, presumed dead{lost}")

    @kt.synchronized
    def create_trial(self, tuner_id):
        self._renew(tuner_id)
        self._expire()
        trial = super().create_trial(tuner_id)
        if trial.status == TrialStatus.RUNNING:
            self._holder[trial.trial_id] = tuner_id
        elif trial.status == TrialStatus.STOPPED and self.ongoing_trials:
            # Nothing new to run, but a running trial may yet come back if its worker dies.
            self.tuner_ids.add(tuner_id)
            return Trial(self.get_space(), status=TrialStatus.IDLE)
        elif trial.status == TrialStatus.STOPPED:
            self._complete = True
        return trial

    @kt.synchronized
    def get_trial(self, trial_id):
        # Workers call this as their heartbeat while a trial trains.
        self._renew(self._holder.get(trial_id))
        return super().get_trial(trial_id)

    @kt.synchronized
    def update_trial(self, trial_id, metrics, step=0):
        self._renew(self._holder.get(trial_id))
        if trial_id in self.end_order:
            return self.trials[trial_id]
        return super().update_trial(trial_id, metrics, step=step)

    @kt.synchronized
    def end_trial(self, trial):
        self._renew(self._holder.get(trial.trial_id))
        if trial.trial_id in self.end_order:  # a second run of a requeued trial: the first result stands
            for tuner_id, ongoing in list(self.ongoing_trials.items()):
                if ongoing.trial_id == trial.trial_id:
                    del self.ongoing_trials[tuner_id]
            return
        if trial.trial_id in self._retry_queue:  # its worker was presumed dead but finished after all
            self._retry_queue.remove(trial.trial_id)
        super().end_trial(trial)

    @kt.synchronized
    def search_over(self) -> bool:
        """True once the search is complete and every worker was told so (or died)."""
        self._expire()
        return self._complete and not self.tuner_ids and not self.ongoing_trials


class RandomOracle(LeasedOracle, kt.oracles.RandomSearchOracle):
    pass


class BayesianOracle(LeasedOracle, kt.oracles.BayesianOptimizationOracle):
    pass


class HyperbandOracle(LeasedOracle, kt.oracles.HyperbandOracle):
    pass


ORACLES = {"random": RandomOracle, "bayesian": BayesianOracle, "hyperband": HyperbandOracle}


def serve(oracle: LeasedOracle, poll_s: float = 1.0) -> None:
    """The chief: answer the workers at KERASTUNER_ORACLE_IP:KERASTUNER_ORACLE_PORT until the search is over."""
    from keras_tuner.src import protos
    from keras_tuner.src.distribute.oracle_chief import OracleServicer

    address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    protos.get_service_grpc().add_OracleServicer_to_server(OracleServicer(oracle), server)
    try:
        server.add_insecure_port(address)
    except RuntimeError:
        raise UserError(f"KERASTUNER_ORACLE_IP/PORT {address}: cannot listen there (in use, or not this host)") from None
    server.start()
    print(f"tuning chief: serving the oracle at {address}")
    try:
        while not oracle.search_over():
            time.sleep(poll_s)
    finally:
        server.stop(grace=poll_s)
