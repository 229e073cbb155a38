"""Scoring candidates in order, in this process or in worker processes."""

from __future__ import annotations

from lawforge.search.candidates import CandidateContext, score_candidates


class CandidatePool:
    """Evaluates candidates in order, in this process or in worker processes.

    Candidates are scored in consecutive batches of ``ctx.batch`` forms, each one batched fit;
    the batches, not the worker count, decide which forms share a fit, so the same candidates
    give the same records with any number of workers.
    """

    def __init__(self, ctx: CandidateContext, workers: int):
        self.ctx = ctx
        self.ex = None
        if workers > 1:
            import concurrent.futures as cf
            import multiprocessing as mp

            self.ex = cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                                             initializer=_init_worker, initargs=(ctx,))

    def map(self, texts: list[str]) -> list[dict]:
        size = max(1, int(self.ctx.batch))
        batches = [texts[i:i + size] for i in range(0, len(texts), size)]
        if self.ex is None:
            done = [score_candidates(b, self.ctx) for b in batches]
        else:
            done = list(self.ex.map(_eval_in_worker, batches))
        return [rec for recs in done for rec in recs]

    def close(self):
        if self.ex is not None:
            self.ex.shutdown(cancel_futures=True)


_CTX: CandidateContext | None = None


def _init_worker(ctx: CandidateContext) -> None:
    global _CTX
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it finishes the step

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
