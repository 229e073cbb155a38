"""Scoring candidates in order, in this process or in worker processes."""

from __future__ import annotations

from lawforge.search.candidates import CandidateContext, score_candidates


class CandidatePool:
    """Evaluates candidates in order, in this process or in worker processes.

    Candidates are scored in consecutive batches of ``ctx.batch`` forms, each one batched fit;
    the batches, not the worker count, decide which forms share a fit, so the same candidates
    give the same records with any number of workers.
    """

    def __init__(self, ctx: CandidateContext, workers: int, ray: str | None = None):
        self.ctx = ctx
        self.ex = None
        self.actors = None
        if ray is not None:
            self.actors = _RayActors(ctx, workers, ray)
        elif workers > 1:
            import concurrent.futures as cf
            import multiprocessing as mp

            import pickle

            from lawforge.procs import start_worker

            self.ex = cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=start_worker,
                                             initargs=("lawforge.search.pool:_init_worker", pickle.dumps(ctx)))

    def map(self, texts: list[str]) -> list[dict]:
        size = max(1, int(self.ctx.batch))
        batches = [texts[i:i + size] for i in range(0, len(texts), size)]
        if self.actors is not None:
            done = self.actors.map(batches)
        elif self.ex is None:
            done = [score_candidates(b, self.ctx) for b in batches]
        else:
            done = list(self.ex.map(_eval_in_worker, batches))
        return [rec for recs in done for rec in recs]

    def close(self):
        if self.ex is not None:
            self.ex.shutdown(cancel_futures=True)
        if self.actors is not None:
            self.actors.close()


class _RayActors:
    """``workers`` Ray actors (default: one per CPU of the cluster), each holding the scoring
    context, scoring batches in order (``ActorPool.map``); an actor whose process is lost is
    restarted and its batch run again (Ray's ``max_restarts`` and ``max_task_retries``)."""

    def __init__(self, ctx: CandidateContext, workers: int, address: str):
        from ray.util import ActorPool

        from lawforge.procs import RaySession

        self.session = RaySession(address, num_cpus=workers).start()
        ray = self.session.ray
        n = workers if workers and workers > 0 else self.session.cpus()
        actor = ray.remote(num_cpus=1, max_restarts=3, max_task_retries=3)(_Scorer)
        ref = ray.put(ctx)
        self.actors = [actor.remote(ref) for _ in range(n)]
        self.pool = ActorPool(self.actors)

    def map(self, batches: list[list[str]]) -> list[list[dict]]:
        return list(self.pool.map(lambda a, b: a.score.remote(b), batches))

    def close(self) -> None:
        for a in self.actors:
            self.session.ray.kill(a)
        self.session.close()


class _Scorer:
    """A Ray actor's state: the scoring context, and one torch thread."""

    def __init__(self, ctx: CandidateContext):
        import torch

        torch.set_num_threads(1)
        self.ctx = ctx

    def score(self, texts: list[str]) -> list[dict]:
        return score_candidates(texts, self.ctx)


_CTX: CandidateContext | None = None


def _init_worker(ctx: CandidateContext) -> None:
    """A search worker (after :func:`lawforge.procs.start_worker`): one torch thread, the context."""
    global _CTX
    import torch

    torch.set_num_threads(1)
    _CTX = ctx


def _eval_in_worker(texts: list[str]) -> list[dict]:
    return score_candidates(texts, _CTX)


class single_thread_torch:
    """Fits are small: one torch thread per process avoids oversubscribing the cores when
    several searches run side by side (measured: same speed alone, far faster in parallel)."""

    def __init__(self, active: bool = True):
        self.active = active

    def __enter__(self):
        import torch

        self.before = torch.get_num_threads()
        if self.active:
            torch.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self.before)
        return False
