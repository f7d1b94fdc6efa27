"""What a live client's job costs with no model in it: the ``floor`` graph of live_graphs.py (a 512² canvas sent
inline as base64 PNG → ``PreviewImage``) queued again and again on a real ComfyUI ``main.py``, timed POST → image
bytes back, once per way of waiting (websocket, ``/history`` polling; bench/device/live_client.py). This is the
part of the client-side times of BENCHMARKS.md section 12 that no sampler can remove: validation, execution
bookkeeping, PNG decode and encode, the transfers. CPU-bound, so it runs anywhere (``--cpu``); prints a table.

    COMFYUI_PATH=/path/to/ComfyUI PYTHONPATH=.pack python -m lcm_lora_pack.bench.device.bench_client_floor --calls 30
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from lcm_lora_pack.bench.device.bench_server_realtime import server_base, start_server
from lcm_lora_pack.bench.device.live_client import WAITS, Client
from lcm_lora_pack.bench.device.live_graphs import floor_graph


def measure(client: Client, calls: int) -> list[float]:
    """ms per job, the first (warm-up) left out; a new canvas each call, as a live client sends."""
    times = []
    for seed in range(calls + 1):
        seconds, image, status = client.run(floor_graph("eager", seed, "", "", smoke=False), timeout=120)
        if status != "success" or image is None:
            raise RuntimeError(f"floor job {seed}: {status}")
        times.append(seconds * 1e3)
    return times[1:]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--port", type=int, default=8198)
    parser.add_argument("--waits", default=",".join(WAITS))
    parser.add_argument("--flags", default="--cpu", help="main.py flags (default --cpu)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        base = server_base(Path(tmp) / "base")
        server = start_server(Path(os.environ["COMFYUI_PATH"]), base, args.port, args.flags.split(),
                              Path(tmp) / "server.log")
        rows = []
        try:
            for wait in args.waits.split(","):
                client = Client(args.port, wait)
                try:
                    times = measure(client, args.calls)
                finally:
                    client.close()
                ordered = sorted(times)
                rows.append(f"| {wait} | {len(times)} | {statistics.median(times):.1f} | "
                            f"{ordered[int(0.9 * (len(ordered) - 1))]:.1f} | {ordered[0]:.1f} |")
        finally:
            server.terminate()
            server.wait(timeout=60)
    print("| wait | jobs | median ms | p90 ms | min ms |\n|---|---:|---:|---:|---:|\n" + "\n".join(rows), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
