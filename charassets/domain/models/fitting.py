"""Where heads are fitted: in this process's threads, or in worker processes that a build already holds.

A full build with worker processes (``runner.build_everything``) lends them (``lending``): each
head's fit (the epochs of ``train_head`` / ``train_multilabel_head``, most of training's time)
runs in a worker while this process samples, masks and scores the others. With nothing lent,
the heads are trained in this process, one per core at a time in threads, each fit on its share
of torch's threads (one each on two cores), and logged once all are fitted.

A fit draws every random number from its own seeded generator (``heads.AttributeHead``), so it
is reproducible wherever it runs, beside whatever else, with as many torch threads; a head
fitted with another thread count differs in the last bits of its weights (at most ~5e-8 for one
thread against two, measured), not in what the table says (a 200k-record build wrote the same
final table either way).
"""

from __future__ import annotations

import atexit
import gc
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TypeVar

import torch

from charassets.domain.lending import lent

T = TypeVar("T")
R = TypeVar("R")


def fit(trainer: Callable[..., R], *args) -> R:
    """``trainer(*args)`` in the lent pool, or here when none is lent."""
    pool, _ = lent()
    return trainer(*args) if pool is None else pool.submit(trainer, *args).result()


def ready_helper() -> None:
    """A spawned helper's start (``runner.build_everything(helpers=...)``): one torch thread, and what its first fit
    and the report's scans and charts would import (torch's optimizers import ``torch._dynamo`` on first use, ~1 s of
    a core; matplotlib ~0.4 s). At exit, what it made is kept out of the interpreter's last garbage collections (as a
    run worker's, ``runner._worker_init``): the build's end waits for its helpers to exit."""
    atexit.register(gc.freeze)
    torch.set_num_threads(1)
    torch.optim.AdamW(torch.nn.Linear(1, 1).parameters())
    import charassets.domain.models.heads  # noqa: F401
    import charassets.domain.report.figures  # noqa: F401
    from charassets.domain.report.render import _pyplot

    _pyplot()


def each_head(work: Callable[[T], R], items: Iterable[T], cost: Callable[[T], float] | None = None) -> Iterator[tuple[T, R]]:
    """``work`` over ``items``, ``width`` at a time in threads, as ``(item, result)`` pairs; one after another where there
    is one core or one item.

    ``cost`` (say, the rows a head is fitted on): the costliest items start first, so that the longest fit does not
    start last while the other worker idles (four heads on two workers, measured at 100k records: Gender, Hair Length
    and Eye Color one after another on one worker beside Hair Color alone on the other).

    With a pool lent (``width`` its width), pairs come as the fits finish: the caller handles each result (logs a
    head) while the next ones are still being fitted in the workers. With nothing lent, one thread per torch thread of
    this process, and every fit is done before the first pair is handed over, in the order of ``items``: the caller's
    logging (plots, MLflow) would hold the interpreter lock the fits need between torch calls (measured: no faster
    than one fit after another).

    Close the generator when stopping early (``contextlib.closing``): the heads not started are
    cancelled and the ones in flight (at most ``width``) finished before it returns, so no fit
    outlives the pool it was lent.
    """
    items = list(items)
    order = sorted(range(len(items)), key=lambda i: -cost(items[i])) if cost else list(range(len(items)))  # stable: ties keep their order
    pool, lent_width = lent()
    cores = torch.get_num_threads()
    width = min(len(items), lent_width if pool is not None else cores)
    if width < 2:
        yield from ((item, work(item)) for item in items)
        return
    threads = ThreadPoolExecutor(width, thread_name_prefix="head")
    if pool is not None:
        try:
            started = {threads.submit(work, items[i]): i for i in order}  # a thread pool starts its work in this order
            for done in as_completed(started):
                yield items[started[done]], done.result()
        finally:
            threads.shutdown(wait=True, cancel_futures=True)
        return
    torch.set_num_threads(max(1, cores // width))  # the fits share the cores: each on its share of torch's threads
    try:
        results = dict(zip(order, threads.map(work, [items[i] for i in order]), strict=True))
    finally:
        threads.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(cores)
    yield from ((item, results[i]) for i, item in enumerate(items))
