"""Raw frame journal throughput: hot-path `append` cost and background write rate.

Run: .venv/bin/python bench/bench_frames.py [N_FRAMES]

Prints figures measured in the same run: `FrameWriter.append` against a bare
``deque.append`` (the floor of any queueing), the end-to-end rate (append + encode + zstd +
write, until `close` returns) against the 50 k frames/s a busy recorder process may see,
and the on-disk size per frame.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import deque

from pumpwatch.segments.frames import FrameWriter, iter_frames, list_frame_files

TARGET_FPS = 50_000
T0 = 1_772_359_200_000_000


def sample_frames(n: int) -> list[str]:
    # Binance aggTrade-like frames with varying numbers: realistic size and entropy
    out = []
    for i in range(n):
        ms = 1772359200000 + i
        price = 3.1 + (i % 97) / 1000
        qty = (i * 7919) % 5000 / 10
        maker = "true" if i % 3 else "false"
        out.append(
            f'{{"stream":"0gusdt@aggTrade","data":{{"e":"aggTrade","E":{ms},"a":{900000000 + i},'
            f'"s":"0GUSDT","p":"{price:.4f}","q":"{qty:.1f}","f":{i},"l":{i + 1},"T":{ms},"m":{maker}}}}}'
        )
    return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300_000
    frames = sample_frames(n)
    raw_bytes = sum(len(f) for f in frames)

    dq: deque[tuple[int, str]] = deque()
    t = time.perf_counter()
    for i, f in enumerate(frames):
        dq.append((T0 + i, f))
    base_s = time.perf_counter() - t

    with tempfile.TemporaryDirectory() as tmp:
        w = FrameWriter(tmp, "binance_futures", flush_interval_s=1.0)
        t = time.perf_counter()
        for i, f in enumerate(frames):
            w.append(T0 + i * 10, f)
        append_s = time.perf_counter() - t
        w.close()
        total_s = time.perf_counter() - t
        disk = sum(f.size_bytes for f in list_frame_files(tmp))
        t = time.perf_counter()
        read = sum(1 for _ in iter_frames(tmp, "binance_futures"))
        read_s = time.perf_counter() - t
    assert read == n, (read, n)

    print(f"frames: {n:,}, {raw_bytes / n:.0f} bytes each")
    print(
        f"append: {append_s / n * 1e9:.0f} ns/frame vs bare deque.append {base_s / n * 1e9:.0f} ns "
        f"(ratio {append_s / base_s:.2f})"
    )
    fps = n / total_s
    print(
        f"end to end (append+encode+zstd+write): {fps:,.0f} frames/s = {fps / TARGET_FPS:.1f}x the "
        f"{TARGET_FPS:,}/s target"
    )
    print(f"on disk: {disk / n:.1f} bytes/frame, compression {raw_bytes / disk:.1f}x")
    print(f"read back: {n / read_s:,.0f} frames/s")


if __name__ == "__main__":
    main()
