"""Shared memory for requests to a backend on the same machine (Linux): the client's sealed memfd.

Why a memfd and not a file in /dev/shm:
- It has no name in any file system: a client that is killed cannot leave a segment behind. The
  kernel frees the memory once the client's descriptor is closed (by exit, even SIGKILL) and the
  backend has unmapped it, which it does when the request that used it ends.
- It is sealed (F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_SEAL) before anyone else sees it. The backend
  refuses unsealed segments, so nobody can shrink a segment under the backend's mapping, which would
  kill the backend with SIGBUS when it reads past the new end.
- The backend reaches it as /proc/<client pid>/fd/<fd>: only processes of the same user (or root)
  can open another process's descriptors. The segment's first bytes hold a magic and a random token
  that the request header repeats, so a stale, guessed or forwarded reference (e.g. through an SSH
  tunnel to a loopback port) does not match another process's memory.

Layout of a segment (offsets checked by shared_protocol.messages):
  [0, SHM_HEADER_BYTES)        magic b"HIFILLS1" and the 16-byte token
  image, mask                  at multiples of SHM_ALIGN
  reply area                   at a multiple of SHM_REPLY_ALIGN, as large as the image: the backend
                               maps only this part writable and writes the result region into it.

The client copies the caller's pixels into the segment (the one copy) and keeps the segment for its
next requests (grown when needed, freed by Client.close()). Nothing here needs more than the
standard library; on other systems unavailable_reason() says why and the client sends frames.
"""

from __future__ import annotations

import contextlib
import hmac
import mmap
import os
import stat
import sys
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

from .messages import (
    SHM_ALIGN,
    SHM_HEADER_BYTES,
    SHM_REPLY_ALIGN,
    BufferSpec,
    FrameLike,
    SharedMemoryError,
    SharedMemoryRef,
)

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

MAGIC = b"HIFILLS1"
_TOKEN_BYTES = 16
_SEALS = ("F_SEAL_SHRINK", "F_SEAL_GROW", "F_SEAL_SEAL")
MEMFD_NAME = "hifill-shm"  # shows in /proc/<pid>/maps as "/memfd:hifill-shm (deleted)"


def unavailable_reason() -> str | None:
    """Why this system cannot use shared memory for requests, or None when it can."""
    if not sys.platform.startswith("linux"):
        return f"shared memory is only used on Linux (this is {sys.platform})"
    if not hasattr(os, "memfd_create") or fcntl is None or not all(hasattr(fcntl, s) for s in _SEALS):
        return "this Python has no memfd_create or file seals"
    if not os.path.isdir("/proc/self/fd"):
        return "/proc is not mounted"
    return None


def _align(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


@dataclass(frozen=True)
class Layout:
    """Where the buffers and the reply area go in a segment of `size` bytes."""

    offsets: tuple[int, ...]
    reply_offset: int
    reply_length: int
    size: int


def plan_layout(buffer_bytes: Sequence[int], reply_length: int) -> Layout:
    """Buffers one after the other from SHM_HEADER_BYTES (SHM_ALIGN'ed), then the reply area."""
    offsets, position = [], SHM_HEADER_BYTES
    for nbytes in buffer_bytes:
        offsets.append(position)
        position = _align(position + nbytes, SHM_ALIGN)
    reply_offset = _align(position, SHM_REPLY_ALIGN)
    return Layout(tuple(offsets), reply_offset, reply_length, reply_offset + max(reply_length, 1))


class Segment:
    """The client's segment: a sealed memfd of a fixed size, mapped read-write in this process.

    Raises OSError if the system refuses (no memfd, out of memory, too many descriptors).
    """

    def __init__(self, size: int) -> None:
        if size < SHM_HEADER_BYTES:
            raise ValueError(f"a segment needs at least {SHM_HEADER_BYTES} bytes")
        size = _align(size, mmap.PAGESIZE)
        fd = os.memfd_create(MEMFD_NAME, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, size)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
            memory = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            raise
        token = os.urandom(_TOKEN_BYTES)
        memory[: len(MAGIC) + _TOKEN_BYTES] = MAGIC + token
        self.fd = fd
        self.size = size
        self.token = token.hex()
        self._memory: mmap.mmap | None = memory
        self._populated = SHM_HEADER_BYTES  # bytes from the start that have been written (pages exist)
        # Closed with the Client, or at the latest when this object is collected.
        self._finalizer = weakref.finalize(self, _close, memory, fd)

    @property
    def closed(self) -> bool:
        return self._memory is None

    def write(self, offset: int, data: FrameLike) -> None:
        """Copy a buffer (bytes-like, e.g. a numpy array) into the segment at offset.

        Pages never written before are filled with pwrite(): the kernel then allocates them without a
        page fault each and without zeroing them first (about 3x cheaper than through the mapping);
        pages that exist are written through the mapping (a plain memcpy, cheaper than pwrite)."""
        assert self._memory is not None
        view = memoryview(getattr(data, "buffer", data)).cast("B")
        end = offset + view.nbytes
        if end <= self._populated:
            with memoryview(self._memory) as target:
                target[offset:end] = view
            return
        done = 0
        while done < view.nbytes:  # one pwrite moves at most about 2 GiB
            done += os.pwrite(self.fd, view[done:], offset + done)
        self._populated = max(self._populated, end)

    def read(self, offset: int, length: int) -> bytes:
        """A copy of length bytes at offset."""
        assert self._memory is not None
        return self._memory[offset : offset + length]

    def ref(self, layout: Layout, pid: int | None = None) -> SharedMemoryRef:
        """The request's "shm" field for this segment and layout."""
        return SharedMemoryRef(
            token=self.token,
            size=layout.size,
            offsets=layout.offsets,
            pid=os.getpid() if pid is None else pid,
            fd=self.fd,
            reply=(layout.reply_offset, layout.reply_length),
        )

    def close(self) -> None:
        """Unmap and close the descriptor; the memory is freed once the backend has unmapped it too."""
        self._memory = None
        self._finalizer()


def _close(memory: mmap.mmap, fd: int) -> None:
    with contextlib.suppress(BufferError):  # a view still exported: unmapped when it is collected
        memory.close()
    with contextlib.suppress(OSError):
        os.close(fd)


# ---------------------------------------------------------------------------------------------- backend


class Attachment:
    """The backend's mapping of a client's segment for one request.

    views: read-only views of the buffers (in the header's order); reply: the writable reply area
    (None without one). close() releases them; the kernel frees the memory when the client's side is
    gone too. The mapping is released at the latest when the last view of it is collected.
    """

    def __init__(self, ref: SharedMemoryRef, views: list[memoryview], reply: memoryview | None, maps: list):
        self.ref = ref
        self.views = views
        self.reply = reply
        self._maps = maps

    def write_reply(self, data: FrameLike) -> int:
        """Copy a result into the reply area; returns its offset in the segment."""
        assert self.reply is not None and self.ref.reply is not None
        view = memoryview(getattr(data, "buffer", data)).cast("B")
        if view.nbytes > self.reply.nbytes:
            raise ValueError(
                f"a {view.nbytes}-byte result does not fit the {self.reply.nbytes}-byte reply area"
            )
        self.reply[: view.nbytes] = view
        return self.ref.reply[0]

    def close(self) -> None:
        views = [*self.views, *([self.reply] if self.reply is not None else [])]
        self.views, self.reply = [], None
        for view in views:
            with contextlib.suppress(BufferError):  # still used (e.g. a numpy array): freed with it
                view.release()
        for memory in self._maps:
            with contextlib.suppress(BufferError):
                memory.close()
        self._maps = []

    def __enter__(self) -> Attachment:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def attach(ref: SharedMemoryRef, specs: Sequence[BufferSpec], request_id: str | None = None) -> Attachment:
    """Open and map a request's segment, after checking it is what the header says.

    ref has passed messages.decode (layout inside ref.size, Limits). Checked here, before any byte of
    the segment is read: a pid and fd are given; /proc/<pid>/fd/<fd> is a regular file of this user,
    a memfd sealed against shrinking, at least ref.size bytes. Then its magic and token must match.
    Raises SharedMemoryError with a sentence; never leaves a descriptor or mapping behind.
    """
    reason = unavailable_reason()
    if reason is not None:
        raise SharedMemoryError(f"not available on the backend ({reason}).", request_id)
    if ref.pid is None or ref.fd is None or ref.reply is None:
        raise SharedMemoryError("the request does not say which process's segment to use.", request_id)
    path = f"/proc/{ref.pid}/fd/{ref.fd}"
    where = f"descriptor {ref.fd} of process {ref.pid}"
    try:
        before = os.stat(path)  # follows the link: refuse devices, pipes, sockets before opening them
        if not stat.S_ISREG(before.st_mode):
            raise SharedMemoryError(f"{where} is not a shared-memory segment.", request_id)
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise SharedMemoryError(
            f"{where} does not exist (the client ended, or it runs in a sandbox with its own processes).",
            request_id,
        ) from None
    except PermissionError:
        raise SharedMemoryError(
            f"the backend may not open {where} (another user's process?).", request_id
        ) from None
    except OSError as error:
        raise SharedMemoryError(f"{where} cannot be opened ({error.strerror}).", request_id) from None
    maps: list[mmap.mmap] = []
    try:
        info = os.fstat(fd)
        if (info.st_dev, info.st_ino) != (before.st_dev, before.st_ino) or not stat.S_ISREG(info.st_mode):
            raise SharedMemoryError(f"{where} changed while it was opened.", request_id)
        if info.st_uid != os.geteuid():
            raise SharedMemoryError(f"{where} belongs to another user.", request_id)
        try:
            seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        except OSError:
            seals = 0
        if not seals & fcntl.F_SEAL_SHRINK:
            raise SharedMemoryError(
                f"{where} is not a memfd sealed against shrinking (the backend only maps sealed segments).",
                request_id,
            )
        if info.st_size < ref.size:
            raise SharedMemoryError(
                f"the segment has {info.st_size} bytes but the request declares {ref.size}.", request_id
            )
        reply_offset, reply_length = ref.reply
        request_part = mmap.mmap(fd, reply_offset, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
        maps.append(request_part)
        token = bytes.fromhex(ref.token)
        stored = request_part[: len(MAGIC) + _TOKEN_BYTES]
        if stored[: len(MAGIC)] != MAGIC or not hmac.compare_digest(stored[len(MAGIC) :], token):
            raise SharedMemoryError(
                f"{where} is not the segment this request names (token mismatch).", request_id
            )
        reply = None
        if reply_length:
            reply_part = mmap.mmap(
                fd,
                reply_length,
                flags=mmap.MAP_SHARED,
                prot=mmap.PROT_READ | mmap.PROT_WRITE,
                offset=reply_offset,
            )
            maps.append(reply_part)
            reply = memoryview(reply_part)
        whole = memoryview(request_part)
        views = [
            whole[offset : offset + spec.nbytes] for spec, offset in zip(specs, ref.offsets, strict=True)
        ]
        whole.release()
        return Attachment(ref, views, reply, maps)
    except SharedMemoryError:
        for memory in maps:
            memory.close()
        raise
    except OSError as error:  # mmap refused (e.g. out of address space)
        for memory in maps:
            memory.close()
        raise SharedMemoryError(
            f"{where} cannot be mapped ({error.strerror or error}).", request_id
        ) from None
    finally:
        os.close(fd)
