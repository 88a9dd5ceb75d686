"""Exact frame extraction over many videos, one worker process per core.

`extract_many` runs `pipeline.frames.extract_frames` for each job in a pool of worker processes
(one decoder thread each) and reports, per video, either its frame records or its error: one bad
video never sinks the others, not even one that kills its worker process. What it buys on 2 cores
(docs/benchmarks.md, "Frame extraction"): 1.2-1.4x over one-after-another for many small videos,
whose per-video fixed costs (opening, indexing) are serial; about 1.0-1.1x for large 1080p videos,
where one extraction already keeps both cores busy (frame threads plus its JPEG thread).

Workers are started with the `forkserver` method where available (never plain `fork`: the
caller may hold threads, e.g. inside Dagster), preloading this module so they fork with the
decoder libraries imported.
"""
from __future__ import annotations

import multiprocessing
import os
import traceback
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import BadFootageError
from pipeline.frames import FrameRecord, default_frame_name, extract_frames


@dataclass(frozen=True)
class FrameJob:
    """One video to extract: which file, which target times, where the JPEGs go."""

    video_id: str
    path: str | Path
    targets_s: Sequence[float]
    out_dir: str | Path
    jpeg_quality: int = 95


@dataclass(frozen=True)
class VideoError:
    """Why one video failed, as plain data (exceptions with custom constructors do not pickle).

    For bad footage `field`, `value`, `problem` and `remedy` are those of the BadFootageError;
    `kind` is the exception's class name ("WorkerCrash" when the worker process died).
    """

    video_id: str
    path: str
    kind: str
    message: str
    field: str | None = None
    value: Any = None
    problem: str | None = None
    remedy: str | None = None
    detail: str = ""  # traceback text from the worker

    @property
    def is_bad_footage(self) -> bool:
        return self.kind == BadFootageError.__name__

    def to_exception(self) -> Exception:
        """A BadFootageError equal to the worker's for bad footage, else a RuntimeError with the message."""
        if self.is_bad_footage:
            return BadFootageError(self.path, self.field or "", self.value, self.remedy or "", problem=self.problem or "")
        return RuntimeError(f"{self.path}: {self.kind}: {self.message}")


@dataclass
class BatchResult:
    """Records of the videos that succeeded and errors of those that failed, keyed by video id."""

    records: dict[str, list[FrameRecord]] = field(default_factory=dict)
    errors: dict[str, VideoError] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors


def _error_of(job: FrameJob, exc: BaseException) -> VideoError:
    detail = "".join(traceback.format_exception(exc))
    if isinstance(exc, BadFootageError):
        value = exc.value
        try:  # the value travels back through pickle; keep it only if it can
            import pickle

            pickle.dumps(value)
        except Exception:
            value = repr(value)
        return VideoError(job.video_id, str(job.path), type(exc).__name__, str(exc), exc.field, value, exc.problem,
                          exc.remedy, detail)
    return VideoError(job.video_id, str(job.path), type(exc).__name__, str(exc), detail=detail)


def run_job(job: FrameJob, threads: int = 1) -> tuple[str, list[FrameRecord] | VideoError]:
    """Extract one job in this process; errors are returned as data, never raised."""
    try:
        return job.video_id, extract_frames(job.path, job.targets_s, job.out_dir, video_id=job.video_id,
                                            jpeg_quality=job.jpeg_quality, threads=threads)
    except Exception as exc:  # noqa: BLE001 - reported per video, the batch goes on
        return job.video_id, _error_of(job, exc)


def _remove_partial_output(job: FrameJob) -> None:
    """What a worker that died mid-video may have left: its JPEGs and their temp files."""
    out_dir = Path(job.out_dir)
    for target in set(job.targets_s):
        name = default_frame_name(target)
        (out_dir / name).unlink(missing_ok=True)
        for temp in out_dir.glob(f".{name}.*.tmp"):
            temp.unlink(missing_ok=True)


_STARTED: Any = None  # in a worker: the queue that tells the parent which video it is working on


def _init_worker(started: Any) -> None:
    global _STARTED
    _STARTED = started
    # One busy thread per process: the pool provides the parallelism.
    import cv2

    cv2.setNumThreads(1)


def _run_reporting_start(runner: Callable[[FrameJob, int], tuple[str, Any]], job: FrameJob, threads: int):
    _STARTED.put(job.video_id)
    return runner(job, threads)


def _context() -> multiprocessing.context.BaseContext:
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])  # workers fork with the decoder libraries loaded
        return context
    return multiprocessing.get_context("spawn")


def _check_jobs(jobs: list[FrameJob]) -> None:
    ids = [job.video_id for job in jobs]
    if len(set(ids)) != len(ids):
        raise ValueError("every job needs its own video_id")
    outs = [os.path.abspath(job.out_dir) for job in jobs]
    if len(set(outs)) != len(outs):
        raise ValueError("every job needs its own out_dir (JPEG names repeat between videos)")


Runner = Callable[[FrameJob, int], tuple[str, "list[FrameRecord] | VideoError"]]


def extract_many(
    jobs: Iterable[FrameJob],
    workers: int = 2,
    *,
    threads_per_worker: int = 1,
    runner: Runner = run_job,
) -> BatchResult:
    """Extract every job in `workers` separate processes; per-video records and errors.

    Each video is all or nothing (see `extract_frames`): a failed one leaves no JPEGs. If a worker
    process dies (a crash inside a decoder), the pool is replaced: the videos that were being worked
    on are retried one at a time in a fresh process, so only the one that kills its worker again is
    reported ("WorkerCrash", its partial JPEGs removed), and the videos not yet started go on in a
    new pool. `runner` is the function run per job in the workers (module-level, picklable); tests
    replace it.
    """
    jobs = list(jobs)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    _check_jobs(jobs)
    result = BatchResult()
    context = _context()

    def run_pool(batch: list[FrameJob], size: int) -> tuple[list[FrameJob], set[str]]:
        """Run `batch`; return the jobs lost to a broken pool and the ids that had started."""
        started = context.SimpleQueue()
        futures: dict[Future, FrameJob] = {}
        lost: list[FrameJob] = []
        with ProcessPoolExecutor(max_workers=size, mp_context=context, initializer=_init_worker,
                                 initargs=(started,)) as pool:
            for job in batch:
                try:
                    futures[pool.submit(_run_reporting_start, runner, job, threads_per_worker)] = job
                except BrokenProcessPool:
                    lost.append(job)
            for future, job in futures.items():
                try:
                    video_id, outcome = future.result()
                except BrokenProcessPool:
                    lost.append(job)
                    continue
                except Exception as exc:  # noqa: BLE001 - e.g. a result that did not pickle
                    result.errors[job.video_id] = _error_of(job, exc)
                    continue
                if isinstance(outcome, VideoError):
                    result.errors[video_id] = outcome
                else:
                    result.records[video_id] = outcome
        ids: set[str] = set()
        while not started.empty():
            ids.add(started.get())
        started.close()
        return lost, ids

    remaining = jobs
    while remaining:
        lost, started = run_pool(remaining, min(workers, len(remaining)))
        suspects = [job for job in lost if job.video_id in started] or lost
        remaining = [job for job in lost if job not in suspects]
        for job in suspects:  # alone in a fresh process: a crash now is this video's own
            if run_pool([job], 1)[0]:
                _remove_partial_output(job)
                result.errors[job.video_id] = VideoError(
                    job.video_id, str(job.path), "WorkerCrash",
                    "the worker process died while extracting this video (a decoder crash?)",
                    problem="worker process died",
                    remedy="check the file with ffprobe; re-encode it to H.264 if it plays elsewhere")
    order = {job.video_id: i for i, job in enumerate(jobs)}
    result.records = dict(sorted(result.records.items(), key=lambda kv: order[kv[0]]))
    result.errors = dict(sorted(result.errors.items(), key=lambda kv: order[kv[0]]))
    return result
