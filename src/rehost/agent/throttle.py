"""Bandwidth throttling (``bandwidthThrottling`` in Mbps, 0 = none) and the compress-or-not decision.

`Throttle.consume(n)` blocks just long enough to keep the average rate at the limit (a token bucket with a
quarter of a second of burst). `CodecChooser` compresses only when it pays: when sending the compressed
bytes plus compressing them takes less time than sending the raw bytes, from measured rates.
"""

from __future__ import annotations

import threading
import time

from rehost.replication.protocol import Encoding, available_encodings


class Throttle:
    """A token bucket in bytes per second; thread-safe. A rate of 0 means unlimited."""

    def __init__(self, mbps: float = 0.0) -> None:
        self._lock = threading.Lock()
        self._rate = 0.0
        self._tokens = 0.0
        self._stamp = time.monotonic()
        self.set_mbps(mbps)

    @property
    def bytes_per_second(self) -> float:
        return self._rate

    def set_mbps(self, mbps: float) -> None:
        """Change the limit (Mbps = 125,000 bytes/s); takes effect for the next `consume`."""
        with self._lock:
            self._rate = max(0.0, float(mbps or 0)) * 125000.0
            self._tokens = min(self._tokens, self._rate / 4)

    def consume(self, nbytes: int) -> float:
        """Account for `nbytes` about to be sent; sleeps while over the limit. Returns the seconds slept."""
        with self._lock:
            if self._rate <= 0:
                return 0.0
            now = time.monotonic()
            self._tokens = min(self._rate / 4, self._tokens + (now - self._stamp) * self._rate)
            self._stamp = now
            self._tokens -= nbytes
            wait = -self._tokens / self._rate if self._tokens < 0 else 0.0
        if wait > 0:
            time.sleep(wait)
        return wait


class CodecChooser:
    """Picks RAW or the best available compressor for each write from running estimates of the link rate,
    the compressor's rate and its ratio. Every `probe_every`-th write is compressed anyway to keep the
    compressor estimates current; the link rate comes from the sender's timed sends."""

    def __init__(
        self, server_encodings: int, throttle: Throttle | None = None, probe_every: int = 32
    ) -> None:
        usable = server_encodings & available_encodings()
        self.codec = Encoding.RAW
        for enc in (Encoding.ZSTD, Encoding.LZ4, Encoding.ZLIB):
            if usable & (1 << int(enc)):
                self.codec = enc
                break
        self.throttle = throttle
        self.probe_every = probe_every
        self.link_rate = 0.0  # bytes/s, 0 = unknown
        self.comp_rate = 0.0  # raw bytes/s through the compressor
        self.ratio = 0.5  # compressed / raw
        self._count = 0

    def choose(self) -> Encoding:
        """The encoding to try for the next write (the protocol still sends RAW when it does not shrink)."""
        if self.codec is Encoding.RAW:
            return Encoding.RAW
        self._count += 1
        if self._count % self.probe_every == 1 or self.comp_rate == 0.0:
            return self.codec
        link = self.link_rate
        if self.throttle is not None and self.throttle.bytes_per_second > 0:
            link = min(link or self.throttle.bytes_per_second, self.throttle.bytes_per_second)
        if link <= 0:
            return Encoding.RAW
        # Per raw byte: compressing costs 1/comp_rate and sending costs ratio/link, versus 1/link raw.
        return self.codec if 1.0 / self.comp_rate + self.ratio / link < 1.0 / link else Encoding.RAW

    def observe_send(self, nbytes: int, seconds: float) -> None:
        if nbytes >= 65536 and seconds > 0:
            rate = nbytes / seconds
            self.link_rate = rate if self.link_rate == 0 else 0.8 * self.link_rate + 0.2 * rate

    def observe_compress(self, raw: int, packed: int, seconds: float) -> None:
        if raw <= 0 or seconds <= 0:
            return
        rate = raw / seconds
        self.comp_rate = rate if self.comp_rate == 0 else 0.8 * self.comp_rate + 0.2 * rate
        self.ratio = 0.8 * self.ratio + 0.2 * min(1.0, packed / raw)
