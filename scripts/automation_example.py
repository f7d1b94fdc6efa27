#!/usr/bin/env python3
"""Automate ComfyUI with an LCM-LoRA Pack workflow: post it, follow progress, download the images.

Uses only the standard library and ``aiohttp`` (which every ComfyUI install already has)::

    python scripts/automation_example.py example_workflows/api/sd15_lcm_lora_4step.json \\
        --server http://127.0.0.1:8188 --out out/automation --seed 7 --prompt "a red fox, watercolor"

Steps (ComfyUI's HTTP API): open the websocket ``/ws?clientId=<id>`` first (so no message is missed),
``POST /prompt {"prompt": <API workflow>, "client_id": <id>}`` (a 400 answer carries ``node_errors``:
printed and raised), read messages for our ``prompt_id`` (``progress`` is logged) until ``execution_success``
and the final ``executing`` with ``node: null`` (sent once the history entry is stored; an
``execution_error`` / ``execution_interrupted`` stops with an error), then ``GET /history/<prompt_id>`` and
download every output image with ``GET /view?filename=…&subfolder=…&type=…``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

LOG = logging.getLogger("automation_example")


class PromptRejected(RuntimeError):
    """``POST /prompt`` answered 400: the workflow did not validate. ``payload`` holds ComfyUI's answer."""

    def __init__(self, payload: dict) -> None:
        error = payload.get("error", {})
        super().__init__(f"ComfyUI rejected the workflow: {error.get('message', payload)}; "
                         f"node_errors: {json.dumps(payload.get('node_errors', {}))}")
        self.payload = payload


class PromptFailed(RuntimeError):
    """The workflow was accepted but failed while running (``execution_error``)."""


@dataclass
class RunResult:
    prompt_id: str
    images: list[Path] = field(default_factory=list)
    events: list[str] = field(default_factory=list)


def set_inputs(prompt: dict, seed: int | None = None, text: str | None = None) -> dict:
    """Change the seed of every sampler and the text of the node titled 'Positive prompt' (if given)."""
    for node in prompt.values():
        inputs = node.get("inputs", {})
        for key in ("seed", "noise_seed"):
            if seed is not None and key in inputs and not isinstance(inputs[key], list):
                inputs[key] = seed
        if text is not None and node.get("_meta", {}).get("title") == "Positive prompt":
            inputs["text"] = text
    return prompt


async def queue_prompt(session: aiohttp.ClientSession, server: str, prompt: dict, client_id: str) -> str:
    async with session.post(f"{server}/prompt", json={"prompt": prompt, "client_id": client_id}) as response:
        payload = await response.json(content_type=None)
        if response.status != 200:
            raise PromptRejected(payload)
    LOG.info("queued prompt %s (queue position %s)", payload["prompt_id"], payload.get("number"))
    return payload["prompt_id"]


async def follow(ws: aiohttp.ClientWebSocketResponse, prompt_id: str, timeout: float) -> list[str]:
    """Read websocket messages for ``prompt_id`` until it finishes; log progress; return the event types."""
    events: list[str] = []

    async def read() -> list[str]:
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:  # binary frames are live previews
                continue
            event = json.loads(message.data)
            kind, data = event.get("type"), event.get("data") or {}
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            events.append(kind)
            if kind == "progress":
                LOG.info("node %s: step %s/%s", data.get("node"), data.get("value"), data.get("max"))
            elif kind == "executing" and data.get("node"):
                LOG.info("executing node %s", data["node"])
            elif kind == "executing" and "execution_success" in events:
                return events  # node None after success: the history entry is stored
            elif kind in ("execution_error", "execution_interrupted"):
                raise PromptFailed(f"{kind}: {data.get('exception_message', data)}")
        raise PromptFailed(f"websocket closed before prompt {prompt_id} finished (events: {events})")

    try:
        return await asyncio.wait_for(read(), timeout)
    except asyncio.TimeoutError as error:
        raise PromptFailed(f"prompt {prompt_id} not finished after {timeout} s (events: {events})") from error


async def download_images(session: aiohttp.ClientSession, server: str, prompt_id: str, out_dir: Path) -> list[Path]:
    async with session.get(f"{server}/history/{prompt_id}") as response:
        history = (await response.json())[prompt_id]
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = []
    for node_output in history["outputs"].values():
        for image in node_output.get("images", []):
            if image.get("type") != "output":
                continue
            params = {"filename": image["filename"], "subfolder": image.get("subfolder", ""), "type": "output"}
            async with session.get(f"{server}/view", params=params) as response:
                response.raise_for_status()
                target = out_dir / image["filename"]
                target.write_bytes(await response.read())
            saved.append(target)
            LOG.info("saved %s", target)
    return saved


async def run_workflow(server: str, prompt: dict, out_dir: Path, timeout: float = 600) -> RunResult:
    """Post one API-format workflow, follow it over the websocket, download its images."""
    client_id = uuid.uuid4().hex
    ws_url = server.replace("http://", "ws://").replace("https://", "wss://") + f"/ws?clientId={client_id}"
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, max_msg_size=0) as ws:
        prompt_id = await queue_prompt(session, server, prompt, client_id)
        events = await follow(ws, prompt_id, timeout)
        images = await download_images(session, server, prompt_id, out_dir)
    return RunResult(prompt_id, images, events)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workflow", type=Path, help="an API-format workflow (example_workflows/api/*.json)")
    parser.add_argument("--server", default="http://127.0.0.1:8188", help="ComfyUI address")
    parser.add_argument("--out", type=Path, default=Path("out/automation"), help="where images are saved")
    parser.add_argument("--seed", type=int, help="seed for every sampler")
    parser.add_argument("--prompt", help="text of the node titled 'Positive prompt'")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for the result")
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    prompt = set_inputs(json.loads(options.workflow.read_text()), options.seed, options.prompt)
    try:
        result = asyncio.run(run_workflow(options.server.rstrip("/"), prompt, options.out, options.timeout))
    except (PromptRejected, PromptFailed, aiohttp.ClientError) as error:
        LOG.error("%s", error)
        return 1
    LOG.info("done: %d image(s) in %s", len(result.images), options.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
