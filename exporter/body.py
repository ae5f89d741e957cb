"""Compressed bodies: gzip built from raw deflate segments, served without inflating.

The one home of the gzip machinery. The poller process deflates text into
`Segment`s (each ends on a byte boundary, so segments concatenate into one
deflate stream) and joins them with `combine` (the CRC-32 and length of their
text); the serving process holds an `OpenBody` per format and per scrape
`finish`es it into a `Body` with the series read at scrape time.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

from isal import isal_zlib

# Deflate by ISA-L (Intel's storage acceleration library), level 1: on exposition
# text it compresses 5.8x in the time zlib's level 1 takes for 5.4x divided by 2.6
# (12.5 MB of text, 10,000 groups: 24 ms against 61 ms). Its output is plain deflate;
# everything else (inflating, the tests' checks) is the standard library's zlib.
GZIP_LEVEL = 1


@dataclass(frozen=True)
class Segment:
    """Raw deflate data ending on a byte boundary (so segments concatenate into one
    stream), with the CRC-32 and length of the text it holds."""

    data: bytes
    crc: int
    size: int

    @classmethod
    def of(cls, text: bytes, final: bool = False) -> Segment:
        compressor = isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, -isal_zlib.MAX_WBITS)
        flush = isal_zlib.Z_FINISH if final else isal_zlib.Z_SYNC_FLUSH
        data = compressor.compress(text) + compressor.flush(flush)
        return cls(data, isal_zlib.crc32(text), len(text))


_ZEROS = memoryview(bytes(1 << 20))


def _zeros_crc(crc: int, length: int) -> int:
    # crc32 lets go of the GIL on long input: scrapes go on while a large one runs.
    while length:
        step = min(length, len(_ZEROS))
        crc = isal_zlib.crc32(_ZEROS[:step], crc)
        length -= step
    return crc


@lru_cache(maxsize=4096)
def _plain_zeros_crc(length: int) -> int:
    return _zeros_crc(0, length)


_POLY = 0xEDB88320  # CRC-32, bits reversed


def _multmodp(a: int, b: int) -> int:
    """a times b modulo the CRC-32 polynomial (zlib's multmodp)."""
    m, p = 1 << 31, 0
    while True:
        if a & m:
            p ^= b
            if not a & (m - 1):
                return p
        m >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1


_X2N = [1 << 30]  # x^(2^k) modulo the polynomial, k = 0..31 (zlib's x2n_table)
for _ in range(31):
    _X2N.append(_multmodp(_X2N[-1], _X2N[-1]))


def _x8nmodp(length: int) -> int:
    """x^(8 * length) modulo the polynomial: the operator of `length` zero bytes."""
    p, k = 1 << 31, 3
    while length:
        if length & 1:
            p = _multmodp(_X2N[k & 31], p)
        length >>= 1
        k += 1
    return p


_ZERO_FEED_MAX = 1 << 18
"""Below this, feeding zeros through zlib.crc32 is faster than the polynomial
arithmetic (tens of microseconds in Python, whatever the length)."""


def _crc_shift(crc: int, length: int) -> int:
    """The CRC-32 state `crc` advanced over `length` zero bytes, minus what zeros alone add.

    CRC-32 is affine, so crc(A + B) = shift(crc(A), len(B)) ^ crc(B); this is
    zlib's crc32_combine, which Python does not expose: zeros fed through
    zlib.crc32 for short lengths, zlib's own polynomial arithmetic for long ones.
    """
    if not length:
        return crc
    if length > _ZERO_FEED_MAX:
        return _multmodp(_x8nmodp(length), crc)
    return _zeros_crc(crc, length) ^ _plain_zeros_crc(length)


class Checked(Protocol):
    """Deflate data's text, known by its CRC-32 and length."""

    @property
    def crc(self) -> int: ...

    @property
    def size(self) -> int: ...


@dataclass(frozen=True)
class Checksum:
    """The CRC-32 and length of some text."""

    crc: int
    size: int


def combine(segments: Iterable[Checked]) -> tuple[int, int]:
    crc = size = 0
    for segment in segments:
        crc = _crc_shift(crc, segment.size) ^ segment.crc
        size += segment.size
    return crc, size


GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


_INFLATE_INPUT = 16 * 1024


@dataclass(frozen=True)
class Body:
    """One representation of /metrics as one gzip member, kept in parts (never joined).

    A scrape that accepts gzip gets the parts as they are; one that does not
    gets them inflated as it is written (`plain_pieces`), which costs the
    exporter far less memory than keeping an uncompressed copy of every body.
    """

    content_type: str
    gzip_parts: tuple[bytes | bytearray | memoryview, ...]
    length: int
    """Uncompressed bytes."""

    @property
    def gzip_length(self) -> int:
        return sum(len(part) for part in self.gzip_parts)

    @property
    def gzipped(self) -> bytes:
        return b"".join(self.gzip_parts)

    def plain_pieces(self, piece: int = 1 << 20) -> Iterator[bytes]:
        """The text in pieces of at most `piece` bytes, inflated as they are asked for.

        The input is fed in slices too: `unconsumed_tail` is a copy of what is
        left of the input, and a part can be the whole deflated group block, so
        a scrape that stalls would otherwise hold a copy of it.
        """
        inflater = zlib.decompressobj(wbits=31)
        for part in self.gzip_parts:
            view = memoryview(part)
            for start in range(0, len(view), _INFLATE_INPUT):
                data: bytes | memoryview = view[start : start + _INFLATE_INPUT]
                while data:
                    out = inflater.decompress(data, piece)
                    if out:
                        yield out
                    data = inflater.unconsumed_tail
        rest = inflater.flush()
        if rest:
            yield rest

    def plain(self) -> bytes:
        return b"".join(self.plain_pieces())


@dataclass(frozen=True)
class OpenBody:
    """A body whose gzip stream is still open after the tail: per-scrape series can follow."""

    content_type: str
    parts: tuple[bytes | bytearray | memoryview, ...]
    crc: int
    size: int
    openmetrics: bool

    def finish(self, extra: bytes) -> Body:
        if self.openmetrics:
            extra += b"# EOF\n"
        end = Segment.of(extra, final=True)
        crc = isal_zlib.crc32(extra, self.crc)  # the text is at hand: continue the CRC over it
        length = self.size + end.size
        trailer = struct.pack("<II", crc & 0xFFFFFFFF, length & 0xFFFFFFFF)
        return Body(self.content_type, (*self.parts, end.data, trailer), length)
