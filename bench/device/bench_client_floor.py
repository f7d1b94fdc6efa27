"""What a live client's job costs with no model in it: the ``floor`` graph of live_graphs.py (a 512² canvas sent
inline as base64 PNG → ``PreviewImage``) queued again and again on a real ComfyUI ``main.py``, timed POST → image
bytes back, once per way of waiting (websocket, ``/history`` polling; bench/device/live_client.py). This is the
part of the client-side times of BENCHMARKS.md section 12 that no sampler can remove: validation, execution
bookkeeping, PNG decode and encode, the transfers. CPU-bound, so it runs anywhere (``--cpu``); prints a table,
and where each job's time goes (``live_client.phases``, websocket only), for each way the image comes back
(``live_graphs.IMAGE_OUTS``: core's ``PreviewImage`` + ``/view``, or sent over the websocket as krita does).

    COMFYUI_PATH=/path/to/ComfyUI PYTHONPATH=.pack python -m lcm_lora_pack.bench.device.bench_client_floor --calls 30
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from lcm_lora_pack.bench.device.bench_server_realtime import median_phases, server_base, start_server
from lcm_lora_pack.bench.device.live_client import WAITS, Client
from lcm_lora_pack.bench.device.live_graphs import IMAGE_OUTS, floor_graph, phase_table, with_image_out


def measure(client: Client, calls: int, image_out: str = "preview") -> tuple[list[float], list[dict | None]]:
    """(ms per job, phases per job: ``live_client.phases``, None when polling), the first (warm-up) left out; a new
    canvas each call, as a live client sends; the image back the ``image_out`` way (``live_graphs.IMAGE_OUTS``)."""
    times, phases = [], []
    for seed in range(calls + 1):
        prompt = with_image_out(floor_graph("eager", seed, "", "", smoke=False), image_out)
        seconds, image, status = client.run(prompt, timeout=120)
        if status != "success" or image is None:
            raise RuntimeError(f"floor job {seed}: {status}")
        times.append(seconds * 1e3)
        phases.append(client.last_phases)
    return times[1:], phases[1:]


def ways(waits: str, image_outs: str) -> list[tuple[str, str]]:
    """(wait, image out) pairs to measure: every image out with the websocket, core's PreviewImage when polling
    (an image sent over the websocket never reaches ``/history``)."""
    return [(wait, out) for wait in waits.split(",") for out in image_outs.split(",")
            if wait == "ws" or out == "preview"]


def row(wait: str, image_out: str, times: list[float]) -> str:
    ordered = sorted(times)
    return (f"| {wait} | {image_out} | {len(times)} | {statistics.median(times):.1f} | "
            f"{ordered[int(0.9 * (len(ordered) - 1))]:.1f} | {ordered[0]:.1f} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--port", type=int, default=8198)
    parser.add_argument("--waits", default=",".join(WAITS))
    parser.add_argument("--image-outs", default=",".join(IMAGE_OUTS),
                        help="how the image comes back: PreviewImage + /view, or over the websocket (PNG, JPEG)")
    parser.add_argument("--flags", default="--cpu", help="main.py flags (default --cpu)")
    args = parser.parse_args(argv)
    rows, split = [], []
    with tempfile.TemporaryDirectory() as tmp:
        base = server_base(Path(tmp) / "base")
        server = start_server(Path(os.environ["COMFYUI_PATH"]), base, args.port, args.flags.split(),
                              Path(tmp) / "server.log")
        try:
            for wait, image_out in ways(args.waits, args.image_outs):
                client = Client(args.port, wait)
                try:
                    times, phases = measure(client, args.calls, image_out)
                finally:
                    client.close()
                rows.append(row(wait, image_out, times))
                split.append({"graph": "floor", "arm": f"{wait}, {image_out}", "phases_ms": median_phases(phases),
                              "median_ms": round(statistics.median(times), 1)})
        finally:
            server.terminate()
            server.wait(timeout=60)
    print("| wait | image back | jobs | median ms | p90 ms | min ms |\n|---|---|---:|---:|---:|---:|\n"
          + "\n".join(rows), flush=True)
    print(phase_table(split), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
