"""The benches' HTTP client of a ComfyUI server, driven as a live client drives it (issue 23).

``run(prompt)`` POSTs ``/prompt`` and times until the image bytes are back. How it learns the job is done:

* ``ws`` (default; what live clients do -- krita-ai-diffusion, ComfyUI's own frontend): one websocket to
  ``/ws?clientId=…``, opened before the first POST and kept; the job's ``executed`` message for the image node
  names the image, ``execution_success`` (or ``executing`` with no node) ends it, ``execution_error`` /
  ``execution_interrupted`` fail it; then one ``GET /view``. An image node that sends the image itself over the
  websocket (krita's ``ETN_SendImageWebSocket``; the bench's ``LCMBenchClient_SendImageWebSocket``) needs no
  ``/view``: the binary message that arrives while that node runs is the image. A job whose image node sent
  nothing (cached, or a graph without an image: the distillation job) reads ``/history`` once.
* ``poll``: ``GET /history/{id}`` every 2 ms until the job is there, then ``/view`` (the benches' first client; the
  polling requests run on the server's event loop beside the job, so they can slow it).

Where a job's time goes (``ws`` only; :attr:`Client.last_phases` after each :meth:`Client.run`, :func:`phases`):
the client stamps every message of the job as it arrives. ``POST`` is the request until its answer (ComfyUI
validates the whole prompt before it answers), ``queue`` from the answer to ``execution_start``, ``cache`` from
there to the first node (the executor's cache bookkeeping, ``execution_cached``), then one phase per node class
that ran -- from its ``executing`` message to the next node's (or ``execution_success``): the node's host time,
including the device work it waits for (a GPU node that returns before its kernels finish is charged to the next
node that syncs) -- and ``view``, ``execution_success`` until the image bytes are back (``/view``). The phases
add up to the round trip, less the websocket's delivery of the last message.
"""
from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
import uuid

IMAGE_NODE = "9"  # every bench graph's image node (PreviewImage)
WAITS = ("ws", "poll")


class Client:
    def __init__(self, port: int, wait: str = "ws"):
        if wait not in WAITS:
            raise ValueError(f"wait {wait!r}: one of {', '.join(WAITS)}")
        self.url = f"http://127.0.0.1:{port}"
        self.client_id = uuid.uuid4().hex
        self.wait = wait
        self.last_phases: dict[str, float] | None = None  # ms per phase of the last ws job (:func:`phases`)
        self._stamps: list = []
        self._loop = self._session = self._socket = None

    def get(self, path: str, timeout: float = 10.0) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
            return response.read()

    def alive(self) -> bool:
        try:
            self.get("/system_stats", timeout=5)
            return True
        except (urllib.error.URLError, OSError):
            return False

    def run(self, prompt: dict, timeout: float = 540.0) -> tuple[float, bytes | None, str]:
        """(seconds POST → image bytes, image bytes or None, status)."""
        if self.wait == "ws":
            self._connect()
        body = json.dumps({"prompt": prompt, "client_id": self.client_id}).encode()
        start = time.perf_counter()
        request = urllib.request.Request(self.url + "/prompt", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            prompt_id = json.loads(response.read())["prompt_id"]
        self.last_phases, self._stamps = None, [(start, "post", None), (time.perf_counter(), "answered", None)]
        if self.wait == "ws":
            try:
                image, status = self._loop.run_until_complete(asyncio.wait_for(self._listen(prompt_id), timeout))
            except TimeoutError:
                return time.perf_counter() - start, None, "timeout"
            if image is not None:
                data = image if isinstance(image, bytes) else self._view(image)
                self._stamps.append((time.perf_counter(), "viewed", None))
                self.last_phases = phases(self._stamps, prompt)
                return time.perf_counter() - start, data, status
            if status != "success":
                return time.perf_counter() - start, None, status
        return self._history(prompt_id, start, timeout)

    def close(self) -> None:
        if self._loop is None:
            return
        self._loop.run_until_complete(self._session.close())
        self._loop.close()
        self._loop = self._session = self._socket = None

    def _view(self, image: dict) -> bytes:
        return self.get(f"/view?filename={image['filename']}&subfolder={image['subfolder']}&type={image['type']}")

    def _history(self, prompt_id: str, start: float, timeout: float) -> tuple[float, bytes | None, str]:
        while time.perf_counter() - start < timeout:
            history = json.loads(self.get(f"/history/{prompt_id}"))
            if prompt_id in history:
                entry = history[prompt_id]
                status = entry.get("status", {}).get("status_str", "?")
                images = entry.get("outputs", {}).get(IMAGE_NODE, {}).get("images", [])
                if not images:
                    return time.perf_counter() - start, None, f"{status}: {json.dumps(entry.get('status'))[:300]}"
                return time.perf_counter() - start, self._view(images[0]), status
            time.sleep(0.002)
        return time.perf_counter() - start, None, "timeout"

    def _connect(self) -> None:
        import aiohttp  # ComfyUI's own dependency: present wherever its server runs

        if self._socket is not None and not self._socket.closed:
            return
        self._loop = self._loop or asyncio.new_event_loop()

        async def connect():
            self._session = self._session or aiohttp.ClientSession()
            return await self._session.ws_connect(f"{self.url.replace('http', 'ws', 1)}/ws?clientId={self.client_id}",
                                                  max_msg_size=0)

        self._socket = self._loop.run_until_complete(connect())

    async def _listen(self, prompt_id: str) -> tuple[dict | bytes | None, str]:
        """(the image node's first image -- its ``/view`` entry, or its bytes when the node sent them over the
        websocket -- or None, status) from this job's messages."""
        import aiohttp

        image, running = None, None
        async for message in self._socket:
            if message.type == aiohttp.WSMsgType.BINARY:
                # Latent previews, or the image itself when the image node sends it (krita's way): event type 1
                # (PREVIEW_IMAGE) and the image format, 4 bytes each, then the encoded image.
                if running == IMAGE_NODE and image is None and message.data[:4] == b"\x00\x00\x00\x01":
                    image = bytes(message.data[8:])
                continue
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            event = json.loads(message.data)
            data = event.get("data") or {}
            if data.get("prompt_id") != prompt_id:
                continue
            kind = event.get("type")
            self._stamps.append((time.perf_counter(), kind, data.get("node")))
            if kind == "executing":
                running = data.get("node")
            if kind == "executed" and data.get("node") == IMAGE_NODE and image is None:
                image = ((data.get("output") or {}).get("images") or [None])[0]
            elif kind in ("execution_error", "execution_interrupted"):
                return None, f"error: {json.dumps(data)[:300]}"
            elif kind == "execution_success" or (kind == "executing" and data.get("node") is None):
                return image, "success"
        return None, "error: the websocket closed"


def phases(stamps: list[tuple[float, str, str | None]], prompt: dict) -> dict[str, float]:
    """ms per phase of one job (module docstring) from its ``(time, message type, node)`` stamps: ``POST``,
    ``queue``, ``cache``, one entry per node class that ran (summed when several nodes share a class), ``view``."""
    ends = ("execution_success", "done")  # "executing" with no node: the end on servers without execution_success
    marks = [(t, "done" if kind == "executing" and node is None else kind, node) for t, kind, node in stamps
             if kind in ("post", "answered", "execution_start", "viewed", "executing", *ends)]
    out: dict[str, float] = {}
    names = {"post": "POST", "answered": "queue", "execution_start": "cache", **dict.fromkeys(ends, "view")}
    for (t, kind, node), (t_next, _, _) in zip(marks, marks[1:], strict=False):
        name = prompt.get(node, {}).get("class_type", node) if kind == "executing" else names.get(kind)
        if name is not None:
            out[name] = out.get(name, 0.0) + (t_next - t) * 1e3
    return out
