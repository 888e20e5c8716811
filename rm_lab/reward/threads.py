"""Small-op work (heads over cached embeddings, the head refit's logistic regressions) runs on one CPU thread.

Why: with a frozen encoder a training step is a few (64 x ~400) matrix products and a refit is an L-BFGS over a
few thousand rows. Spreading such ops over an OpenMP/BLAS thread team buys nothing, and on a CPU that other jobs
share every op waits at the team's barrier for a descheduled peer: measured on the 2-core development machine
under load, a binomial loss's forward+backward took 8 ms with 2 threads and 0.6 ms with 1, and one ConvAI2 fold
of `crossval` spent most of its 21 minutes so. Each output element is still computed by one thread either way,
so the scores do not change (tests/test_crossval.py checks this).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def single_thread(enabled: bool = True) -> Iterator[None]:
    """Within the block: torch intra-op threads and the BLAS/OpenMP pools numpy and scikit-learn use set to 1
    (restored on exit). `enabled=False`: a no-op (a fine-tuned encoder's forward pass does gain from threads)."""
    if not enabled:
        yield
        return
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(before)


__all__ = ["single_thread"]
