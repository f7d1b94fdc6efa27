"""A real ComfyUI server process on 127.0.0.1 for tests (free port, temporary base directory)."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from lcm_lora_pack.devkit.host import comfyui_root, make_base_directory, subprocess_env

START_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ComfyServer:
    """Start/stop ``main.py`` with the pack linked into a temporary base directory."""

    def __init__(self, base: Path, model_store: Path | None = None, extra_args: tuple[str, ...] = ()) -> None:
        self.base = make_base_directory(base)
        self.extra_args = tuple(extra_args)
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.log_path = self.base / "server.log"
        if model_store is not None:
            for kind in model_store.iterdir():
                if kind.is_dir():
                    for file in kind.iterdir():
                        target = self.base / "models" / kind.name / file.name
                        target.parent.mkdir(parents=True, exist_ok=True)
                        if not target.exists():
                            target.symlink_to(file)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                   "--base-directory", str(self.base), "--disable-api-nodes", "--disable-auto-launch",
                   "--preview-method", "none", *self.extra_args]
        env = subprocess_env(PYTHONUNBUFFERED="1")  # the test-only nodes import lcm_lora_pack
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(command, cwd=comfyui_root(), stdout=self._log, stderr=subprocess.STDOUT,
                                        env=env)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                self.get_json("/system_stats")
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer within {START_TIMEOUT_S} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=20)
        if getattr(self, "_log", None):
            self._log.close()

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def request(self, path: str, data: Any = None, method: str | None = None,
                timeout: float = 30) -> tuple[int, bytes]:
        body = json.dumps(data).encode() if data is not None else None
        req = urllib.request.Request(self.url + path, data=body, method=method,
                                     headers={"Content-Type": "application/json"} if body else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def get_json(self, path: str) -> Any:
        status, body = self.request(path)
        if status != 200:
            raise ConnectionError(f"GET {path} -> {status}: {body[:200]!r}")
        return json.loads(body)

    def post_prompt(self, prompt: dict, client_id: str = "tests") -> tuple[int, dict]:
        status, body = self.request("/prompt", {"prompt": prompt, "client_id": client_id})
        return status, json.loads(body or b"{}")

    def wait_history(self, prompt_id: str, timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                history = self.get_json(f"/history/{prompt_id}")
            except OSError:  # a poll that timed out on a starved CPU (urllib's URLError and socket timeouts)
                if self.process is not None and self.process.poll() is not None:
                    raise
                continue
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                return history[prompt_id]
            time.sleep(0.5)
        raise TimeoutError(f"prompt {prompt_id} not finished in {timeout} s:\n{self.log_tail()}")
