"""Pack format and chunk codecs: how chunks are laid out in a pack object and compressed.

A pack is a sequence of entries, each a 41-byte header (``RHC1``, the chunk's 32-byte sha256, the codec
byte, the payload length as a big-endian u32) followed by the payload. The headers make a pack
self-describing: a lost index is rebuilt from them, and ``verify`` tells a damaged header from a damaged
payload. Codec 0 stores the chunk as it is, codec 1 as a zstd frame (level 1, with its content size).
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
from collections.abc import Iterator, Mapping
from typing import Any, cast

import zstandard

from rehost.chunkstore import CHUNK_SIZE
from rehost.errors import StorageError

CODEC_RAW = 0
CODEC_ZSTD = 1
HEADER = struct.Struct(">4s32sBI")
MAGIC = b"RHC1"
_ZSTD_LEVEL = 1

IndexRow = tuple[bytes, str, int, int, int, int]
"""(digest, pack ID, payload offset, payload length, codec, raw size): one row of the chunk index."""


def pack_name(pack_id: str) -> str:
    """The backend name of a pack (two-character fan-out keeps directories small)."""
    return f"packs/{pack_id[:2]}/{pack_id}"


def build_pack(pack_id: str, entries: Mapping[bytes, tuple[int, bytes, int]]) -> tuple[bytes, list[IndexRow]]:
    """A pack's bytes from ``digest -> (codec, payload, raw size)``, and the index rows for it."""
    parts: list[bytes] = []
    rows: list[IndexRow] = []
    offset = 0
    for digest, (codec, payload, size) in entries.items():
        parts.append(HEADER.pack(MAGIC, digest, codec, len(payload)))
        parts.append(payload)
        offset += HEADER.size
        rows.append((digest, pack_id, offset, len(payload), codec, size))
        offset += len(payload)
    return b"".join(parts), rows


def parse_pack(pack_id: str, data: bytes) -> Iterator[IndexRow]:
    """Index rows read from a pack's entry headers; stops at the first damaged header."""
    pos = 0
    while pos + HEADER.size <= len(data):
        magic, digest, codec, length = HEADER.unpack_from(data, pos)
        start = pos + HEADER.size
        if magic != MAGIC or start + length > len(data):
            return
        if codec == CODEC_ZSTD:
            try:
                size = zstandard.frame_content_size(data[start : start + min(length, 32)])
            except zstandard.ZstdError:
                size = -1
        else:
            size = length
        if 0 <= size <= CHUNK_SIZE:
            yield digest, pack_id, start, length, codec, size
        pos = start + length


def entry_header_matches(data: bytes, row: IndexRow) -> bool:
    """Whether the entry header in front of ``row``'s payload names the same chunk as the index."""
    digest, _pack, offset, length, codec, _size = row
    if offset < HEADER.size or offset + length > len(data):
        return False
    return HEADER.unpack_from(data, offset - HEADER.size) == (MAGIC, digest, codec, length)


class Codec:
    """Compresses and decompresses chunks; safe for use by many threads (one compressor each)."""

    def __init__(self) -> None:
        self._tls = threading.local()

    def _cctx(self) -> zstandard.ZstdCompressor:
        cctx = getattr(self._tls, "cctx", None)
        if cctx is None:  # a ZstdCompressor must not be shared between threads
            cctx = self._tls.cctx = zstandard.ZstdCompressor(level=_ZSTD_LEVEL, write_content_size=True)
        return cctx

    def encode(self, data: bytes) -> tuple[int, bytes]:
        """(codec, payload): zstd when that shrinks the chunk, the chunk itself otherwise."""
        packed = self._cctx().compress(data)
        if len(packed) < len(data):
            return CODEC_ZSTD, packed
        return CODEC_RAW, bytes(data)

    def encode_many(self, datas: list[bytes]) -> list[tuple[int, bytes]]:
        """``encode`` of each; a batch is compressed on every core at once (python-zstandard's
        ``compress`` holds the GIL, its ``multi_compress_to_buffer`` does not)."""
        if len(datas) < 2 or (os.cpu_count() or 1) < 2:
            return [self.encode(d) for d in datas]
        packed = self._cctx().multi_compress_to_buffer(cast(Any, datas), threads=os.cpu_count() or 1)
        out = []
        for j, data in enumerate(datas):
            payload = packed[j].tobytes()
            out.append((CODEC_ZSTD, payload) if len(payload) < len(data) else (CODEC_RAW, bytes(data)))
        return out

    @staticmethod
    def decode(digest: bytes, codec: int, payload: bytes, size: int, *, verify: bool) -> bytes:
        """The chunk's raw bytes; StorageError if they cannot be decoded, have the wrong length, or
        (with ``verify``) do not hash to ``digest``."""
        if codec == CODEC_RAW:
            data = payload
        elif codec == CODEC_ZSTD:
            try:
                data = zstandard.ZstdDecompressor().decompress(payload, max_output_size=CHUNK_SIZE)
            except zstandard.ZstdError as exc:
                raise StorageError(f"chunk {digest.hex()} is damaged: {exc}") from exc
        else:
            raise StorageError(f"chunk {digest.hex()} has an unknown codec {codec}")
        if len(data) != size or (verify and hashlib.sha256(data).digest() != digest):
            raise StorageError(f"chunk {digest.hex()} is damaged: its bytes do not match its digest")
        return data
