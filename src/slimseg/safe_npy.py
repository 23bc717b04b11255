"""Reading ``.npy`` members of an untrusted zip without trusting what they say about themselves.

A member's header is read and checked (plain numeric dtype, the shape the caller expects, a byte
budget, a zip entry size that agrees with the header) before any data is read; the data is then
read in bounded chunks, so neither a huge declared shape nor a member that decompresses beyond its
declared size can make loading allocate more than the caller allowed.
"""

from __future__ import annotations

import zipfile
from typing import IO

import numpy as np
from numpy.lib import format as npy_format

from .errors import ModelFileError

MAX_HEADER_CHARS = 10_000  # numpy's own default guard for .npy headers
MAX_HEADER_BYTES = 12 + MAX_HEADER_CHARS * 4  # magic, version, length and the header (UTF-8 at worst)
CHUNK = 1 << 20
_NUMERIC_KINDS = "biuf"  # bool, signed and unsigned integers, floats


class _Counted:
    """A file wrapper counting the bytes read (the header's length is needed to check the entry size)."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh, self.count = fh, 0

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        self.count += len(data)
        return data


def read_header(fh: IO[bytes], where: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran_order, dtype, header bytes) of the ``.npy`` stream ``fh``; refuse anything but a
    plain numeric array."""
    counted = _Counted(fh)
    try:
        version = npy_format.read_magic(counted)
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(counted, max_header_size=MAX_HEADER_CHARS)
        elif version == (2, 0):
            shape, fortran, dtype = npy_format.read_array_header_2_0(counted, max_header_size=MAX_HEADER_CHARS)
        else:
            raise ModelFileError(f"{where}: unsupported .npy version {version}; the file is damaged or foreign")
    except ValueError as err:
        raise ModelFileError(f"{where}: its array header is invalid ({err}); the file is damaged") from None
    if dtype.hasobject:
        raise ModelFileError(f"{where} holds pickled Python objects; it was refused and nothing in it ran")
    if dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise ModelFileError(f"{where} has dtype {dtype}, not a plain numeric array; the file is damaged or foreign")
    if any(n < 0 for n in shape):
        raise ModelFileError(f"{where} declares a negative shape {shape}; the file is damaged")
    return tuple(shape), fortran, dtype, counted.count


def declared_bytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    """Bytes an array of ``shape`` and ``dtype`` takes (Python integers: no overflow)."""
    size = 1
    for n in shape:
        size *= int(n)
    return size * dtype.itemsize


def read_data(fh: IO[bytes], info: zipfile.ZipInfo, shape: tuple[int, ...], fortran: bool,
              dtype: np.dtype, header_bytes: int, where: str) -> np.ndarray:
    """The array data after the header, read in bounded chunks: exactly the declared bytes, no more."""
    nbytes = declared_bytes(shape, dtype)
    if info.file_size != header_bytes + nbytes:
        raise ModelFileError(
            f"{where}: its header declares {nbytes} bytes of data but the zip entry holds "
            f"{info.file_size - header_bytes}; the file is damaged or was tampered with")
    buf = bytearray(nbytes)
    view, at = memoryview(buf), 0
    while at < nbytes:
        chunk = fh.read(min(CHUNK, nbytes - at))
        if not chunk:
            raise ModelFileError(f"{where} is truncated ({at} of {nbytes} bytes); the file is damaged")
        view[at:at + len(chunk)] = chunk
        at += len(chunk)
    if fh.read(1):
        raise ModelFileError(f"{where} decompresses to more than it declares; the file is damaged or was "
                             "tampered with")
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order="F" if fortran else "C")
