"""Measure the batch size (views per forward pass) and, for the fast path, the memory format that run a model
fastest per view on this device, as the tasks run it, and store the result (:mod:`~.tuning`).

The model runs through :class:`~.runner.ViewRunner` (the same packing, casts and scoring as ``predict``) on
synthetic views of its checkpoint's test size. ``slowfast-zoo tune MODEL`` does the same from the command line.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .runner import ViewRunner, class_scores, eval_mode, load_model
from .tuning import MAX_BATCH, Precision, Tuning, model_signature, setting, store_tunings

__all__ = ["CPU_CANDIDATES", "CUDA_CANDIDATES", "MARGIN", "tune"]

log = logging.getLogger(__name__)

#: batch sizes tried on a CPU: the divisors of 30 (the published protocols' most views) up to 10
CPU_CANDIDATES: tuple[int, ...] = (1, 2, 3, 5, 6, 10)
#: batch sizes tried on a GPU: the divisors of 30 from 5 (a batch past the memory is skipped)
CUDA_CANDIDATES: tuple[int, ...] = (5, 6, 10, 15, 30)
#: a larger batch must be this much faster per view to be chosen (it costs memory and latency)
MARGIN = 0.02


def tune(
    model: Any,
    *,
    device: str | torch.device | None = None,
    precision: Precision = "fp32",
    fast: bool = False,
    candidates: Sequence[int] | None = None,
    repeats: int = 2,
    clock: Callable[[], float] = time.perf_counter,
    store: bool = True,
) -> Tuning:
    """Measure the batch sizes (and, ``fast``, the memory formats) for ``model`` (a name or a model from
    :func:`slowfast_zoo.create`) as the tasks run it, store the fastest per view, and return it.

    Every setting runs once to warm up; then ``repeats`` rounds run each setting once, in turn (a load that comes
    and goes on a shared machine then touches every setting alike), timed with ``clock``. A setting's time is its
    median divided by the batch. A batch that runs out of GPU memory is recorded as ``None`` and ends the larger
    ones. A larger batch is chosen only if it is :data:`MARGIN` faster per view.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    base = load_model(model, device=device, precision=precision)
    dev = next(base.parameters()).device
    sizes = sorted(set(candidates or (CUDA_CANDIDATES if dev.type == "cuda" else CPU_CANDIDATES)))
    if not sizes or sizes[0] < 1 or sizes[-1] > MAX_BATCH:
        raise ValueError(f"candidate batch sizes must be in 1..{MAX_BATCH}, got {list(candidates or [])}")
    layouts: dict[bool | None, Any] = {None: base}
    if fast:
        from ..models.optimize import optimize_for_inference

        dtype = torch.bfloat16 if precision == "bf16" else None
        layouts = {cl: optimize_for_inference(base, channels_last=cl, dtype=dtype) for cl in (True, False)}
    view = _example_view(base, dev)
    runs = [_Run(net, view, b, cl, precision) for cl, net in layouts.items() for b in sizes]
    samples: dict[str, list[float] | None] = {r.key: [] for r in runs}
    with torch.inference_mode():
        for timer in [None] + [clock] * repeats:  # a warm-up round (kernels chosen, memory allocated), untimed
            for r in runs:
                if samples[r.key] is not None and not _fits(r, samples, timer):
                    _drop_larger(r, runs, samples)
    times = {r.key: None if (s := samples[r.key]) is None else statistics.median(s) / r.batch for r in runs}
    best: tuple[float, int, bool | None] | None = None
    for r in runs:
        per_view = times[r.key]
        if per_view is not None and (
            best is None or per_view < best[0] * (1 - MARGIN) or (per_view < best[0] and r.batch <= best[1])
        ):
            best = (per_view, r.batch, r.channels_last)
    if best is None:
        raise RuntimeError(f"no batch size fits in memory on {dev} (tried {sizes})")
    tuning = Tuning(model_signature(layouts[best[2]], precision), best[1], best[2], times)
    if store:
        store_tunings([tuning])
    return tuning


class _Run:
    """One setting: ``batch`` copies of a view through the model as the tasks run it, to the host."""

    def __init__(self, model: nn.Module, view: torch.Tensor, batch: int, cl: bool | None, precision: Precision) -> None:
        self.model, self.view, self.batch, self.channels_last = model, view, batch, cl
        self.key = setting(batch, cl)  # its name in Tuning.seconds_per_view
        self.runner = ViewRunner(model, class_scores(model), batch, precision=precision)
        self.device = view.device

    def __call__(self) -> None:
        with eval_mode(self.model):
            for _ in range(self.batch):
                self.runner.add(self.view)
            self.runner.take()  # to the host: the device has finished
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _fits(run: _Run, samples: dict[str, list[float] | None], clock: Callable[[], float] | None) -> bool:
    """Run once (timed into ``samples`` if ``clock``); False if it ran out of GPU memory."""
    try:
        start = clock() if clock else 0.0
        run()
        if clock:
            samples[run.key].append(clock() - start)  # type: ignore[union-attr]
    except torch.cuda.OutOfMemoryError:
        run.runner.pending.clear()
        if run.device.type == "cuda":
            torch.cuda.empty_cache()
        log.info("batch %d does not fit on %s", run.batch, run.device)
        return False
    return True


def _drop_larger(run: _Run, runs: list[_Run], samples: dict[str, list[float] | None]) -> None:
    """``run``'s batch and the larger ones of its layout: out of memory (None), not run again."""
    for r in runs:
        if r.channels_last == run.channels_last and r.batch >= run.batch:
            samples[r.key] = None


def _example_view(model: nn.Module, device: torch.device) -> torch.Tensor:
    """A view as the transforms make one for this checkpoint: ``(3, T, S, S)`` float32 at its test size."""
    cfg: Any = model.pretrained_cfg
    g = torch.Generator().manual_seed(0)
    return torch.randn((3, cfg.num_frames, cfg.test_crop_size, cfg.test_crop_size), generator=g).to(device)
