"""CPU smoke run of bench/device/bench_server_realtime.py with the live clients' graphs (issue 23): a real
``main.py`` on the CPU, the devkit's tiny SD1.5 checkpoint at 64², driven over HTTP as the GPU bench drives it --
(a) LCM + TAESD (random TAESD files of TAESD's architecture, loaded by core's ``VAELoader``), (b) krita's live
graph with a ControlNet and without. Proven: the bench builds models, graphs and images that a real server
runs to the end (every job "success", an image back), compares each arm with the eager arm of the same graph and
seed (on the CPU the fast path falls back: pixel difference 0), and prints its table. Never timings."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from lcm_lora_pack.devkit.host import comfyui_root, subprocess_env
from lcm_lora_pack.devkit.server import free_port

REPO = Path(__file__).resolve().parents[1]
GRAPHS = ("taesd", "live", "live-nocn")
ARMS = ("eager", "cuda_graph")

pytestmark = pytest.mark.server


@pytest.mark.slow
def test_server_bench_smoke_live_graphs(tmp_path):
    bench = [sys.executable, "-m", "lcm_lora_pack.bench.device.bench_server_realtime", "--smoke", "--base",
             str(tmp_path / "base")]
    env = subprocess_env(COMFYUI_PATH=str(comfyui_root()))
    prepared = subprocess.run([*bench, "--prepare-only"], cwd=REPO, capture_output=True, text=True, timeout=600,
                              env=env)
    assert prepared.returncode == 0, prepared.stderr[-4000:]
    out = tmp_path / "server.json"
    run = subprocess.run([*bench, "--config", "native-static", "--graphs", ",".join(GRAPHS) + ",live-nocn@dpmpp_2m,floor:eager",
                          "--arms", ",".join(ARMS), "--calls", "2", "--port", str(free_port()), "--json", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=1200, env=env)
    assert run.returncode == 0, run.stderr[-4000:]
    summary = json.loads(out.read_text())
    assert summary["server_survived"] and not summary["fatal_lines"], summary
    rows = {(row["graph"], row["arm"]): row for row in summary["arms"] if "graph" in row}
    assert set(rows) == {(graph, arm) for graph in GRAPHS for arm in ARMS} | {
        ("live-nocn@dpmpp_2m", "eager"), ("live-nocn@dpmpp_2m", "cuda_graph"), ("floor", "eager")}, summary["arms"]
    for (_graph, arm), row in rows.items():
        assert row["status"] == "success" and row["alive_after"] and len(row["times_ms"]) == 1, row
        assert row["max_pixel_diff"] == (None if arm == "eager" else 0), row
    # Where each job's time went (the websocket's stamps): validation, the nodes that ran, the image fetched.
    phases = rows[("live", "cuda_graph")]["phases_ms"]
    assert list(phases)[:2] == ["POST", "queue"] and list(phases)[-1] == "view", phases
    assert {"SamplerCustomAdvanced", "LCMPack_FastVAEDecode", "PreviewImage"} <= set(phases), phases
    assert "CheckpointLoaderSimple" not in phases  # the server's cache kept the checkpoint between the calls
    assert "| live | cuda_graph |" in run.stdout and "TABLE native-static" in run.stdout
    assert "PHASES native-static" in run.stdout and "SamplerCustomAdvanced " in run.stdout
    assert any("is not CUDA" in line for line in summary["pack_lines"]), summary["pack_lines"]


@pytest.mark.slow
def test_server_bench_smoke_sdxl_live_graph(tmp_path):
    """Graph (c): krita's live graph on SDXL. ``--prepare-only`` with an SDXL graph writes the SDXL checkpoint (full
    CLIP-L + CLIP-G renamed by ComfyUI's own SDXL saving code; smoke: SDXL depths at 320 channels), its LoRA and
    ControlNet; the server's own loaders take them as SDXL (no missing text-encoder key), and every job of both
    arms succeeds with the ControlNet applied, the fast arm equal to eager."""
    bench = [sys.executable, "-m", "lcm_lora_pack.bench.device.bench_server_realtime", "--smoke", "--base",
             str(tmp_path / "base")]
    env = subprocess_env(COMFYUI_PATH=str(comfyui_root()))
    graphs = ["--graphs", "live-sdxl", "--arms", "eager,cuda_graph"]
    prepared = subprocess.run([*bench, "--prepare-only", *graphs], cwd=REPO, capture_output=True, text=True,
                              timeout=600, env=env)
    assert prepared.returncode == 0, prepared.stderr[-4000:]
    out = tmp_path / "server.json"
    run = subprocess.run([*bench, "--config", "native-static", *graphs, "--calls", "2", "--port", str(free_port()),
                          "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=1200, env=env)
    assert run.returncode == 0, run.stderr[-4000:]
    summary = json.loads(out.read_text())
    rows = {row["arm"]: row for row in summary["arms"] if row.get("graph") == "live-sdxl"}
    assert set(rows) == {"eager", "cuda_graph"} and summary["server_survived"], summary
    for row in rows.values():
        assert row["status"] == "success" and len(row["times_ms"]) == 1, row
        assert {"ControlNetApplyAdvanced", "SamplerCustomAdvanced"} <= set(row["phases_ms"]), row
    assert rows["cuda_graph"]["max_pixel_diff"] == 0
    log = (tmp_path / "base" / "server-native-static.log").read_text()
    assert "Requested to load SDXLClipModel" in log and "Requested to load SDXL\n" in log, log[-3000:]
    assert "clip missing" not in log.lower() and "Requested to load ControlNet" in log


def test_live_client_websocket_and_polling_see_the_same_jobs(tmp_path):
    """The bench's client (bench/device/live_client.py) on a real CPU ``main.py``: waiting on the websocket (live
    clients' way, the bench's default) and polling ``/history`` get the same image bytes of the same job; a job
    that fails while it runs (a canvas that is not an image) comes back as an error from both, not as a hang."""
    from lcm_lora_pack.bench.device import bench_server_realtime as bench
    from lcm_lora_pack.bench.device import live_graphs
    from lcm_lora_pack.bench.device.live_client import Client

    base = bench.server_base(tmp_path / "base")
    port = free_port()
    server = bench.start_server(comfyui_root(), base, port, ["--cpu"], tmp_path / "server.log")
    clients = {wait: Client(port, wait) for wait in ("ws", "poll")}
    try:
        assert clients["poll"].alive(), (tmp_path / "server.log").read_text()[-3000:]
        images = {}
        for seed, wait in ((1, "ws"), (2, "poll"), (1, "poll"), (2, "ws")):
            seconds, image, status = clients[wait].run(live_graphs.floor_graph("eager", seed, "", "", True), 120)
            assert status == "success" and image and seconds > 0, (wait, status)
            images.setdefault(seed, []).append(image)
        assert images[1][0] == images[1][1] and images[2][0] == images[2][1] and images[1][0] != images[2][0]
        # The job's phases add up to its round trip (less the last message's delivery), nodes by class.
        _, _, _ = clients["ws"].run(live_graphs.floor_graph("eager", 3, "", "", True), 120)
        phases = clients["ws"].last_phases
        assert list(phases)[:2] == ["POST", "queue"] and list(phases)[-1] == "view", phases
        assert {"LCMBenchClient_LoadImageBase64", "PreviewImage"} <= set(phases) and clients["poll"].last_phases is None
        broken = {"11": {"class_type": "LCMBenchClient_LoadImageBase64", "inputs": {"image": "bm90IGFuIGltYWdl"}},
                  "9": {"class_type": "PreviewImage", "inputs": {"images": ["11", 0]}}}
        for client in clients.values():
            _, image, status = client.run(broken, 120)
            assert image is None and status.startswith("error"), status
    finally:
        for client in clients.values():
            client.close()
        server.terminate()
        server.wait(timeout=60)


def test_image_sent_over_the_websocket_as_krita_does(tmp_path):
    """The bench's ``LCMBenchClient_SendImageWebSocket`` (krita's ``ETN_SendImageWebSocket``: the server encodes the
    image and sends it as a binary message to the prompt's client) through a real CPU ``main.py``: the client takes
    the binary message that arrives while the image node runs; PNG gives the pixels ``PreviewImage`` gives, JPEG
    nearly; no ``/view``."""
    import io

    import numpy as np
    from lcm_lora_pack.bench.device import bench_server_realtime as bench
    from lcm_lora_pack.bench.device import live_graphs
    from lcm_lora_pack.bench.device.live_client import Client
    from PIL import Image

    base = bench.server_base(tmp_path / "base")
    port = free_port()
    server = bench.start_server(comfyui_root(), base, port, ["--cpu"], tmp_path / "server.log")
    client = Client(port, "ws")
    try:
        assert client.alive(), (tmp_path / "server.log").read_text()[-3000:]
        pixels, phases = {}, {}
        for image_out in ("preview", "ws-png", "ws-jpeg"):
            prompt = live_graphs.with_image_out(live_graphs.floor_graph("eager", 5, "", "", True), image_out)
            if image_out != "preview":  # the image must come over the websocket, not from /view
                client._view = lambda entry: pytest.fail(f"/view asked for {entry}")
            _, image, status = client.run(prompt, 120)
            assert status == "success" and image, (image_out, status)
            pixels[image_out] = np.asarray(Image.open(io.BytesIO(image)).convert("RGB"), dtype=np.int16)
            phases[image_out] = client.last_phases
        assert np.array_equal(pixels["ws-png"], pixels["preview"])
        assert pixels["ws-jpeg"].shape == pixels["preview"].shape and not np.array_equal(pixels["ws-jpeg"], pixels["preview"])
        assert "LCMBenchClient_SendImageWebSocket" in phases["ws-jpeg"] and "PreviewImage" not in phases["ws-jpeg"]
    finally:
        client.close()
        server.terminate()
        server.wait(timeout=60)


@pytest.mark.slow
def test_dv_sequences_smoke_compares_a_plain_job_after_lcm_with_a_fresh_servers(tmp_path):
    """bench_dv_sequences.py (issue 21's GPU confirmation) on CPU servers: each sequence in a fresh ``main.py``,
    the plain job after the pack's LCM job gives the fresh server's image (digest), and the report says so. On the
    CPU there is no Dynamic VRAM, so this proves the script, not the fix (tests/test_dynamic_tables.py does)."""
    bench = [sys.executable, "-m", "lcm_lora_pack.bench.device.bench_dv_sequences", "--smoke", "--base",
             str(tmp_path / "base"), "--port", str(free_port())]
    env = subprocess_env(COMFYUI_PATH=str(comfyui_root()))
    out = tmp_path / "sequences.json"
    run = subprocess.run([*bench, "--sequences", "plain-first,plain-after-pack", "--json", str(out)], cwd=REPO,
                         capture_output=True, text=True, timeout=1200, env=env)
    assert run.returncode == 0, run.stderr[-4000:]
    results = {result["sequence"]: result for result in json.loads(out.read_text())}
    assert all(result["survived"] for result in results.values()), results
    jobs = [job for result in results.values() for job in result["jobs"]]
    assert len(jobs) == 3 and all(job["status"] == "success" and job["digest"] for job in jobs), jobs
    assert results["plain-after-pack"]["same_as_fresh"] is True, results
