"""The server's jobs: one accepted inpaint request each, and the bounded queue the two threads share."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

from shared_protocol import InpaintRequest
from shared_protocol.shm import Attachment

DEFAULT_MAX_QUEUE = 4  # requests that may wait behind the running one before BUSY


@dataclass
class Job:
    """One accepted inpaint request of one client, from the queue until it is done or dropped."""

    identity: bytes
    request: InpaintRequest
    cancelled: threading.Event = field(default_factory=threading.Event)
    attachment: Attachment | None = None  # the client's shared memory, mapped until release()

    @property
    def key(self) -> tuple[bytes, str]:
        return (self.identity, self.request.request_id)

    def release(self) -> None:
        """Unmap the job's shared memory (if any); called once the job can no longer run."""
        if self.attachment is not None:
            self.attachment.close()
            self.attachment = None


class JobQueue:
    """Pending jobs (bounded) plus the one running job, shared by the socket and worker threads."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._condition = threading.Condition()
        self._pending: deque[Job] = deque()
        self._running: Job | None = None
        self._closed = False

    def put(self, job: Job) -> bool:
        """Queue a job; False if the queue is full or closed. An idle worker counts as one more slot,
        so capacity 0 still accepts a request when nothing runs."""
        with self._condition:
            slots = self.capacity + (1 if self._running is None else 0)
            if self._closed or len(self._pending) >= slots:
                return False
            self._pending.append(job)
            self._condition.notify()
            return True

    def take(self, timeout_s: float) -> Job | None:
        """The next job, now marked running; None after timeout_s or once closed."""
        with self._condition:
            if not self._pending and not self._closed:
                self._condition.wait(timeout_s)
            if self._closed or not self._pending:
                return None
            self._running = self._pending.popleft()
            return self._running

    def finish(self, job: Job) -> None:
        with self._condition:
            if self._running is job:
                self._running = None
                self._condition.notify_all()

    def wait_until_idle(self, timeout_s: float) -> bool:
        """Block until no job runs (True) or timeout_s passes (False)."""
        with self._condition:
            return self._condition.wait_for(lambda: self._running is None, timeout_s)

    def cancel(self, key: tuple[bytes, str]) -> tuple[str, Job | None]:
        """("queued", job) if removed from the queue, ("running", job) if signalled, ("unknown", None)."""
        with self._condition:
            for job in self._pending:
                if job.key == key:
                    self._pending.remove(job)
                    return "queued", job
            if self._running is not None and self._running.key == key:
                self._running.cancelled.set()
                return "running", self._running
            return "unknown", None

    def cancel_peer(self, identity: bytes) -> list[Job]:
        """Drop every queued job of a vanished client and signal its running one; returns the dropped."""
        with self._condition:
            dropped = [job for job in self._pending if job.identity == identity]
            for job in dropped:
                self._pending.remove(job)
            if self._running is not None and self._running.identity == identity:
                self._running.cancelled.set()
            return dropped

    @property
    def closed(self) -> bool:
        with self._condition:
            return self._closed

    def snapshot(self) -> tuple[Job | None, list[Job]]:
        with self._condition:
            return self._running, list(self._pending)

    def close(self) -> list[Job]:
        """Stop accepting and taking jobs, cancel the running one; returns the jobs that never ran."""
        with self._condition:
            self._closed = True
            dropped = list(self._pending)
            self._pending.clear()
            if self._running is not None:
                self._running.cancelled.set()
            self._condition.notify_all()
            return dropped
