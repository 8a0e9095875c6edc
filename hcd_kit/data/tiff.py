"""Reading competition TIFF patches: a parser for their one uncompressed layout, and a decoder.

All competition patches share one uncompressed TIFF layout (27,935 bytes, pixels at a fixed offset), so
``find_layout`` parses a sample of headers properly and checks that the layout decodes exactly as PIL
decodes it; ``Decoder`` then only checks each file's size and the header bytes that describe the layout
before copying the pixel bytes straight into the output row. Any file that differs goes through a full PIL
decode and validation, so a file written by another tool still decodes pixel-exactly, and a bad one is
reported by kind (``corrupt``, ``truncated``, ``not 96x96``, ``not RGB``, ``missing``).
"""

from __future__ import annotations

import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hcd_kit.layout import IMAGE_SHAPE

PIXELS = int(np.prod(IMAGE_SHAPE))

# type id -> (bytes per value, struct code, codes per value); ASCII (2) is handled as text
_TYPES = {
    1: (1, "B", 1),
    2: (1, "s", 1),
    3: (2, "H", 1),
    4: (4, "I", 1),
    5: (8, "I", 2),
    6: (1, "b", 1),
    7: (1, "B", 1),
    8: (2, "h", 1),
    9: (4, "i", 1),
    10: (8, "i", 2),
    11: (4, "f", 1),
    12: (8, "d", 1),
}
# tiles, extra samples, colour map, YCbCr: present means "not a plain chunky RGB strip image"
_UNSUPPORTED_TAGS = {320, 322, 323, 324, 325, 338, 530, 531}


@dataclass(frozen=True)
class TiffLayout:
    """Where the pixels of every file sharing this layout are, and which bytes define the layout."""

    size: int  # exact file size in bytes
    checks: tuple[tuple[int, int, bytes], ...]  # (start, stop, reference bytes) that must match
    strips: tuple[tuple[int, int], ...]  # (offset, nbytes) of the pixel strips, in row order


def _read_ifd(data: bytes, order: str, ifd: int) -> tuple[dict[int, tuple], list[tuple[int, int]]]:
    """Numeric tag values of the first IFD, and the byte ranges that hold them."""
    (n,) = struct.unpack_from(order + "H", data, ifd)
    ranges = [(0, 8), (ifd, ifd + 2 + 12 * n + 4)]
    tags: dict[int, tuple] = {}
    for k in range(n):
        tag, typ, count, raw = struct.unpack_from(order + "HHI4s", data, ifd + 2 + 12 * k)
        if typ not in _TYPES:
            raise ValueError(f"TIFF type {typ}")
        size, code, per = _TYPES[typ]
        nbytes = size * count
        start = struct.unpack_from(order + "I", raw)[0] if nbytes > 4 else None
        if typ == 2:  # description, software, date: text that varies per file and never affects pixels
            continue
        blob = raw[:nbytes] if start is None else data[start : start + nbytes]
        if len(blob) != nbytes:
            raise ValueError("tag data past end of file")
        if start is not None:
            ranges.append((start, start + nbytes))
        tags[tag] = struct.unpack(f"{order}{count * per}{code}", blob)
    return tags, ranges


def _is_plain_rgb(tags: dict[int, tuple]) -> bool:
    def value(tag: int, default: int) -> tuple:
        return tags.get(tag, (default,))

    return (
        value(256, 0) == (96,)
        and value(257, 0) == (96,)
        and value(277, 1) == (3,)
        and value(258, 1) == (8, 8, 8)
        and value(259, 1) == (1,)
        and value(262, -1) == (2,)
        and value(284, 1) == (1,)
        and value(266, 1) == (1,)
        and value(317, 1) == (1,)
        and all(v == 1 for v in value(339, 1))
        and not _UNSUPPORTED_TAGS & tags.keys()
    )


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[list[int]] = []
    for a, b in sorted(ranges):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def parse_layout(data: bytes) -> TiffLayout | None:
    """The layout of a baseline uncompressed 96x96 8-bit chunky RGB TIFF, or None if ``data`` is not one."""
    order = {b"II": "<", b"MM": ">"}.get(data[:2])
    try:
        if order is None or struct.unpack_from(order + "H", data, 2)[0] != 42:
            return None
        tags, ranges = _read_ifd(data, order, struct.unpack_from(order + "I", data, 4)[0])
    except (struct.error, ValueError):
        return None
    offsets, counts = tags.get(273), tags.get(279)
    if not _is_plain_rgb(tags) or not offsets or not counts or len(offsets) != len(counts):
        return None
    if sum(counts) != PIXELS or any(o + c > len(data) for o, c in zip(offsets, counts)):
        return None
    checks = tuple((a, b, bytes(data[a:b])) for a, b in _merge(ranges))
    return TiffLayout(size=len(data), checks=checks, strips=tuple(zip(offsets, counts)))


# --- decoding one file -----------------------------------------------------------------------------------


class Decoder:
    """Decodes patches into rows of an output array: fast path when the layout matches, PIL otherwise."""

    def __init__(self, layout: TiffLayout | None) -> None:
        self.layout = layout
        self.buf = bytearray(layout.size + 1 if layout else 0)  # +1 byte: detect files that are too long
        self.fast = 0
        self.pil = 0

    def decode_into(self, path: str, row: np.ndarray) -> str | None:
        """Write the pixels of ``path`` into ``row`` (uint8, 96x96x3); return a problem kind or None."""
        if self.layout is not None:
            try:
                with open(path, "rb", buffering=0) as fh:
                    n = fh.readinto(self.buf)
            except FileNotFoundError:
                return "missing"
            except OSError:
                return "unreadable"
            if n == self.layout.size and all(self.buf[a:b] == ref for a, b, ref in self.layout.checks):
                flat = row.reshape(-1)
                pos = 0
                for off, cnt in self.layout.strips:
                    flat[pos : pos + cnt] = np.frombuffer(self.buf, np.uint8, cnt, off)
                    pos += cnt
                self.fast += 1
                return None
        self.pil += 1
        return self._decode_pil(path, row)

    def _decode_pil(self, path: str, row: np.ndarray) -> str | None:
        from PIL import Image, UnidentifiedImageError

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # PIL warns about odd tags; we report the outcome instead
                with Image.open(path) as im:
                    if im.size != IMAGE_SHAPE[1::-1]:
                        return "not 96x96"
                    if im.mode != "RGB":
                        return "not RGB"
                    row[...] = np.asarray(im)
            return None
        except FileNotFoundError:
            return "missing"
        except (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
            return "truncated" if "truncat" in str(exc).lower() or self._cut_short(path) else "corrupt"

    def _cut_short(self, path: str) -> bool:
        """Empty, or a TIFF header followed by less data than the usual layout holds."""
        with open(path, "rb") as fh:
            head = fh.read(4)
        size = os.path.getsize(path)
        tiff = head in (b"II*\x00", b"MM\x00*")
        return size == 0 or (tiff and self.layout is not None and size < self.layout.size)


def find_layout(paths: list[str]) -> TiffLayout | None:
    """The layout most of ``paths`` share, if it decodes exactly as PIL does (None: decode all with PIL).

    Voting over a sample, rather than trusting the first file, keeps one odd file from sending all the
    others down the slow path.
    """
    found: dict[TiffLayout, list[str]] = {}
    for path in paths:
        try:
            layout = parse_layout(Path(path).read_bytes())
        except OSError:
            continue
        if layout is not None:
            found.setdefault(layout, []).append(path)
    for layout, members in sorted(found.items(), key=lambda kv: -len(kv[1])):
        path = members[0]
        fast, slow = np.zeros(IMAGE_SHAPE, np.uint8), np.zeros(IMAGE_SHAPE, np.uint8)
        dec = Decoder(layout)
        if dec.decode_into(path, fast) is None and dec.fast == 1 and Decoder(None).decode_into(path, slow) is None:
            if np.array_equal(fast, slow):
                return layout
    return None
