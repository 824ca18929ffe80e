"""A progress line for local runs: images done out of the total, rate and ETA
(a worker process of a multi-process run: its own images done and rate only)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Iterator, Mapping

import apache_beam as beam

from transforms.attribution import NAMESPACE
from transforms.tf_model import model_evaluations
from transforms.wording import count

__all__ = ["ReportProgress", "heartbeat", "progress_line", "worker_line"]

_LOG = logging.getLogger(__name__)
_LOCK = threading.Lock()

#: How often the heartbeat looks whether the model computes: the model's first call,
#: where the rate counts from, is known to this many seconds only.
_LOOK_SECONDS = 1.0


@dataclasses.dataclass
class _Count:
    done: int = 0
    attributed: int = 0
    skipped: int = 0  # done by an earlier run (--resume): not in this run's rate
    last_log: float = 0.0
    logged: int = 0  # `done` in the last line logged
    # When the heartbeat first saw the model compute: the rate counts from there,
    # not from the launch (listing, a resume's salvage, the model's load).
    working_since: float | None = None
    # When the heartbeat last saw the model idle (it looks once a second): a batch
    # done before it saw the model compute counts from there (`_working_since`).
    idle_seen: float | None = None


def _working_since(count: _Count) -> float | None:
    """When this run's model started, as far as known: where an image was attributed
    before the heartbeat saw the model compute, the last second it saw it idle (a
    fast model's first batch ends within the heartbeat's second); noted then."""
    if count.working_since is None and count.attributed and count.idle_seen is not None:
        count.working_since = count.idle_seen
    return count.working_since


# Per process and job: the DirectRunner's bundles of one job share one count.
_COUNTS: dict[str, _Count] = {}


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def progress_line(
    done: int,
    total: int | None,
    elapsed: float,
    work: Mapping[str, int] | None = None,
    skipped: int = 0,
    busy: float | None = None,
) -> str:
    """'progress: 16/200 images (8%), 0.52 images/s, ETA 5 min 54 s'.

    `skipped`: of `done`, the images a --resume found done before; the rate (and
    so the ETA) counts only the others, those this run processed.

    `busy`: seconds since the run's model first computed; the rate counts over
    them when given, else over `elapsed` (which 'done in' always shows). The
    heartbeat sees that first call to its second only (`_LOOK_SECONDS`): a shorter
    `busy` counts as that second (a small model's one batch, done in milliseconds
    after the last look, read 7 to 997 images/s on reruns of one run).

    `work`: the heartbeat's line, logged while a batch runs, adds the model's
    `gradient` evaluations and `forward` passes so far ('(running: 1,208 gradient
    evaluations and 96 forward passes so far)'): a run's first batch can take
    minutes before its first image is done.
    """
    running = "running"
    if work is not None:
        forward = work.get("forward", 0)
        running += f": {work.get('gradient', 0):,} gradient evaluations"
        running += f" and {forward:,} forward passes so far" if forward else " so far"
    rate = _rate(done - skipped, elapsed if busy is None else max(busy, _LOOK_SECONDS))
    if total is not None and done > total:  # files added to --dataset after the launch listed it
        text = progress_line(done, None, elapsed, work, skipped, busy)
        more = f" ({done - total} more than the {total} listed at launch)"
        return text.replace(f" {count(done, 'image')}", f" {count(done, 'image')}{more}", 1)
    if done == 0:
        of = f"/{total}" if total is not None else ""
        return f"progress: 0{of} images yet, {_duration(elapsed)} elapsed (first batch {running})"
    if total is None:
        text = (
            f"progress: {count(done, 'image')}, {rate:.2f} images/s, {_duration(elapsed)} elapsed"
        )
    else:
        before = f", {skipped} done before" if skipped else ""
        text = f"progress: {done}/{total} images ({done / max(total, 1):.0%}{before}), {rate:.2f} images/s"
        if done >= total:
            return f"{text}, done in {_duration(elapsed)}"
        eta = (total - done) / rate if rate > 0 else None
        text = f"{text}, ETA {_duration(eta)}" if eta is not None else text
    return text if work is None else f"{text} ({running})"


def worker_line(done: int, elapsed: float, skipped: int = 0) -> str:
    """'progress (this worker): 8 images done, 0.06 images/s': one worker process's
    count, with no job total, percent or ETA (its share of the job is unknown);
    `skipped` as in `progress_line`."""
    before = f" ({skipped} of them done before)" if skipped else ""
    rate = _rate(done - skipped, elapsed)
    return f"progress (this worker): {count(done, 'image')} done{before}, {rate:.2f} images/s"


def _rate(processed: int, elapsed: float) -> float:
    """Images per second this run processed."""
    return processed / elapsed if elapsed > 0 else 0.0


class ReportProgress(beam.DoFn):
    """Counts images that are finished, of one `kind`: `attributed` (RunInference's
    outcomes), `failed` (before RunInference) or `skipped` (done before).

    Every runner gets the `images_done` Beam counter. With `log_lines` (the
    DirectRunner), a progress line is logged at the end of each RunInference
    batch, at most every `every_seconds`, and always for the last image; the
    rate counts from the model's first call where the heartbeat saw it (the
    in-process DirectRunner), else from `start` (the job's launch).
    With `per_worker` (one of several worker processes, each counting only the
    images it handled), the line is the worker's own (`worker_line`): no total,
    percent or ETA, which would mix its count with the job's total; as a worker
    cannot tell its last image, it also logs its count at the end of each bundle
    that counted images it has not logged yet (a worker's share, or its last
    batch, rarely fills a RunInference batch).
    """

    def __init__(
        self,
        kind: str,
        key: str,
        total: int | None,
        start: float,
        batch_size: int,
        log_lines: bool,
        every_seconds: float = 5.0,
        per_worker: bool = False,
    ):
        self._kind, self._key, self._start = kind, key, start
        self._total = None if per_worker else total  # a worker's count never reaches it
        self._batch, self._log, self._every, self._per_worker = (
            batch_size,
            log_lines,
            every_seconds,
            per_worker,
        )

    def setup(self) -> None:
        self._counter = beam.metrics.Metrics.counter(NAMESPACE, "images_done")

    def process(self, element: object) -> None:
        del element  # only counted
        self._counter.inc()
        if not self._log:
            return
        now = time.time()
        with _LOCK:
            count = _COUNTS.setdefault(self._key, _Count(last_log=self._start))
            count.done += 1
            count.attributed += self._kind == "attributed"
            count.skipped += self._kind == "skipped"
            done, skipped, since = count.done, count.skipped, _working_since(count)
            batch_end = self._kind == "attributed" and count.attributed % self._batch == 0
            due = done == self._total or (batch_end and now - count.last_log >= self._every)
            if due:
                count.last_log, count.logged = now, done
        _LOG.debug("counted an image (%s): %d done", self._kind, done)
        if due:
            elapsed = now - self._start
            if self._per_worker:
                _LOG.info("%s", worker_line(done, elapsed, skipped))
            else:
                busy = None if since is None else now - since
                line = progress_line(done, self._total, elapsed, skipped=skipped, busy=busy)
                _LOG.info("%s", line)

    def finish_bundle(self) -> None:
        if not (self._log and self._per_worker):
            return
        now = time.time()
        with _LOCK:
            count = _COUNTS.get(self._key)
            if count is None or count.done == count.logged:
                return
            count.last_log, count.logged = now, count.done
            done, skipped = count.done, count.skipped
        _LOG.info("%s", worker_line(done, now - self._start, skipped))


@contextlib.contextmanager
def heartbeat(
    key: str, total: int | None, start: float, every_seconds: float = 15.0
) -> Iterator[None]:
    """While the body runs, logs the progress line whenever none was logged for
    `every_seconds` (a run's first batch can take a minute before its first line),
    and notes the second the model first computes (the rate counts from there).

    Only meaningful where the workers run in this process (the in-process DirectRunner).
    """
    stop = threading.Event()
    before = model_evaluations()
    with _LOCK:
        _COUNTS.setdefault(key, _Count(last_log=start)).idle_seen = time.time()

    def beat() -> None:
        while not stop.wait(_LOOK_SECONDS):
            now = time.time()
            work = {k: v - before[k] for k, v in model_evaluations().items()}
            with _LOCK:
                count = _COUNTS.setdefault(key, _Count(last_log=start))
                if count.working_since is None:
                    if any(work.values()):
                        count.working_since = _working_since(count) or now
                    else:
                        count.idle_seen = now
                if now - count.last_log < every_seconds:
                    continue
                count.last_log = now
                done, skipped, since = count.done, count.skipped, count.working_since
            busy = None if since is None else now - since
            _LOG.info("%s", progress_line(done, total, now - start, work, skipped, busy))

    thread = threading.Thread(target=beat, name="ig-audit-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
