"""The benches' HTTP client of a ComfyUI server, driven as a live client drives it (issue 23).

``run(prompt)`` POSTs ``/prompt`` and times until the image bytes are back. How it learns the job is done:

* ``ws`` (default; what live clients do -- krita-ai-diffusion, ComfyUI's own frontend): one websocket to
  ``/ws?clientId=…``, opened before the first POST and kept; the job's ``executed`` message for the image node
  names the image, ``execution_success`` (or ``executing`` with no node) ends it, ``execution_error`` /
  ``execution_interrupted`` fail it; then one ``GET /view``. A job whose image node sent nothing (cached, or a
  graph without an image: the distillation job) reads ``/history`` once.
* ``poll``: ``GET /history/{id}`` every 2 ms until the job is there, then ``/view`` (the benches' first client; the
  polling requests run on the server's event loop beside the job, so they can slow it).
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
        if self.wait == "ws":
            try:
                image, status = self._loop.run_until_complete(asyncio.wait_for(self._listen(prompt_id), timeout))
            except TimeoutError:
                return time.perf_counter() - start, None, "timeout"
            if image is not None:
                return time.perf_counter() - start, self._view(image), status
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

    async def _listen(self, prompt_id: str) -> tuple[dict | None, str]:
        """(the image node's first image or None, status) from this job's messages."""
        import aiohttp

        image = None
        async for message in self._socket:
            if message.type != aiohttp.WSMsgType.TEXT:  # binary: latent previews
                continue
            event = json.loads(message.data)
            data = event.get("data") or {}
            if data.get("prompt_id") != prompt_id:
                continue
            kind = event.get("type")
            if kind == "executed" and data.get("node") == IMAGE_NODE:
                image = ((data.get("output") or {}).get("images") or [None])[0]
            elif kind in ("execution_error", "execution_interrupted"):
                return None, f"error: {json.dumps(data)[:300]}"
            elif kind == "execution_success" or (kind == "executing" and data.get("node") is None):
                return image, "success"
        return None, "error: the websocket closed"
