"""Clear the "open for writing" flag that a killed writer leaves in an HDF5 file.

Files with a version-3 superblock (``libver="latest"``) record in it that a writer has them
open; after a SIGKILL the flag stays set and HDF5 refuses to open the file ("file is already
open for write (may use <h5clear file> to clear file consistency flags)"). This does what
``h5clear -s`` does: zero the flags byte and rewrite the superblock's Jenkins lookup3
checksum. The data themselves are untouched; the frame writer then truncates any
uncommitted tail as usual.
"""

from __future__ import annotations

import os
from pathlib import Path

_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_M = 0xFFFFFFFF


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _M


def lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 ``hashlittle`` (HDF5's metadata checksum) of ``data``."""
    a = b = c = (0xDEADBEEF + len(data) + initval) & _M
    k, n = 0, len(data)
    while n > 12:
        a = (a + int.from_bytes(data[k:k + 4], "little")) & _M
        b = (b + int.from_bytes(data[k + 4:k + 8], "little")) & _M
        c = (c + int.from_bytes(data[k + 8:k + 12], "little")) & _M
        a = (a - c) & _M; a ^= _rot(c, 4); c = (c + b) & _M  # noqa: E702
        b = (b - a) & _M; b ^= _rot(a, 6); a = (a + c) & _M  # noqa: E702
        c = (c - b) & _M; c ^= _rot(b, 8); b = (b + a) & _M  # noqa: E702
        a = (a - c) & _M; a ^= _rot(c, 16); c = (c + b) & _M  # noqa: E702
        b = (b - a) & _M; b ^= _rot(a, 19); a = (a + c) & _M  # noqa: E702
        c = (c - b) & _M; c ^= _rot(b, 4); b = (b + a) & _M  # noqa: E702
        k, n = k + 12, n - 12
    if n == 0:
        return c
    tail = data[k:] + bytes(12 - n)  # the remaining bytes, zero padded, added little-endian
    a = (a + int.from_bytes(tail[0:4], "little")) & _M
    b = (b + int.from_bytes(tail[4:8], "little")) & _M
    c = (c + int.from_bytes(tail[8:12], "little")) & _M
    c ^= b; c = (c - _rot(b, 14)) & _M  # noqa: E702
    a ^= c; a = (a - _rot(c, 11)) & _M  # noqa: E702
    b ^= a; b = (b - _rot(a, 25)) & _M  # noqa: E702
    c ^= b; c = (c - _rot(b, 16)) & _M  # noqa: E702
    a ^= c; a = (a - _rot(c, 4)) & _M  # noqa: E702
    b ^= a; b = (b - _rot(a, 14)) & _M  # noqa: E702
    c ^= b; c = (c - _rot(b, 24)) & _M  # noqa: E702
    return c


def is_stale_write_flag(exc: BaseException) -> bool:
    """True when ``exc`` is HDF5's refusal to open a file whose write flag is set."""
    return "h5clear" in str(exc)


def clear_write_flag(path: str | os.PathLike) -> bool:
    """Zero the consistency flags of a version 2/3 superblock at offset 0 of ``path``.

    Returns False (file unchanged) when the file has no such superblock or its checksum
    does not verify; True after clearing. Only call it when no process has the file open.
    """
    path = Path(path)
    with open(path, "r+b") as fh:
        head = fh.read(48)
        if len(head) < 12 or head[:8] != _SIGNATURE or head[8] not in (2, 3):
            return False
        end = 12 + 4 * head[9]  # flags byte at 11, then four addresses of size_of_offsets
        fh.seek(0)
        block = bytearray(fh.read(end + 4))
        if lookup3(bytes(block[:end])) != int.from_bytes(block[end:end + 4], "little"):
            return False
        block[11] = 0
        block[end:end + 4] = lookup3(bytes(block[:end])).to_bytes(4, "little")
        fh.seek(0)
        fh.write(block)
        fh.flush()
        os.fsync(fh.fileno())
    return True
