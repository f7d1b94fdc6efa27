"""Real ComfyUI in this process (tests, scripts, bench): boot once, register the pack, run API-format prompts.

The one ComfyUI host of the repository: the tests' ``comfy`` fixture, ``scripts/run_examples.py``,
``scripts/build_example_workflows.py`` and the benchmark (``bench/host.py``) all boot through :func:`boot`.

ComfyUI is not an installed package: :func:`prepare_import` puts its root (``$COMFYUI_PATH`` or the
provisioned ``.comfyui/ComfyUI``) on ``sys.path`` -- the one path the repository adds. The pack itself is
imported as ``lcm_lora_pack`` (``.pack/lcm_lora_pack``, see :data:`IMPORT_ROOT`), so its ``nodes``,
``samplers`` and ``lora`` never meet ComfyUI's ``nodes.py``, ``comfy/samplers.py`` and ``comfy/lora.py``.

Boot order matters (see ../shared/NOTES.md): ``comfy.cli_args.args`` is set (device, base directory) before
anything imports ``comfy.model_management``; ComfyUI's own ``utils`` package is imported before its
``nodes`` module (ComfyUI's rule, not the pack's).

The base directory is a temporary folder holding ``custom_nodes/lcm-lora-pack`` (a link to this
repository) and ``models/…``; ComfyUI's own tree is only read.
"""
from __future__ import annotations

import asyncio
import importlib
import logging
import os
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
IMPORT_NAME = "lcm_lora_pack"
# `.pack/lcm_lora_pack` -> the repository: the folder to put on PYTHONPATH (made by scripts/provision.py).
IMPORT_ROOT = REPO / ".pack"
PACK_FOLDER_NAME = "lcm-lora-pack"
# PromptExecutor's cache arguments for an in-process executor with no cache: every key any supported ComfyUI reads
# (0.33 added "ram_inactive"; older hosts ignore keys they do not know).
EXECUTOR_CACHE_ARGS = {"lru": 0, "ram": 0, "ram_inactive": 0}
PACK_PREFIX = "LCMPack_"
LOG = logging.getLogger(__name__)


def comfyui_root() -> Path:
    """ComfyUI checkout used by the tests: ``$COMFYUI_PATH`` or the provisioned ``.comfyui/ComfyUI``."""
    root = Path(os.environ.get("COMFYUI_PATH") or REPO / ".comfyui" / "ComfyUI").resolve()
    if not (root / "main.py").is_file():
        raise RuntimeError(f"no ComfyUI at {root}: run `python3 scripts/provision.py` (or set COMFYUI_PATH)")
    return root


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a child Python (a ComfyUI server, a script) that imports ``lcm_lora_pack``."""
    paths = [str(IMPORT_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(dict.fromkeys(paths)), **extra)


def make_base_directory(base: Path) -> Path:
    """Create a ComfyUI base directory: custom_nodes with the pack linked, empty model folders."""
    (base / "custom_nodes").mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / PACK_FOLDER_NAME
    if not link.exists():
        link.symlink_to(REPO, target_is_directory=True)
    for sub in ("checkpoints", "loras", "diffusion_models", "vae", "clip", "text_encoders", "unet"):
        (base / "models" / sub).mkdir(parents=True, exist_ok=True)
    for sub in ("input", "output", "temp", "user"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    return base


class ServerStub:
    """Stands in for ``PromptServer`` (which does not exist in-process): records the messages sent."""

    def __init__(self) -> None:
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.sockets_metadata: dict = {}
        self.messages: list[tuple[str, Any]] = []

    def send_sync(self, event, data, sid=None) -> None:
        self.messages.append((event, data))

    def queue_updated(self) -> None:
        pass


class PromptFailed(AssertionError):
    """A prompt did not validate or did not execute; carries ComfyUI's own error payload."""

    def __init__(self, message: str, payload: Any = None) -> None:
        super().__init__(message)
        self.payload = payload


@dataclass
class ComfyHost:
    """Handle on the in-process ComfyUI with the pack loaded."""

    root: Path
    base: Path
    device: str = "cpu"
    modules: dict = field(default_factory=dict)

    @property
    def nodes(self):
        return self.modules["nodes"]

    @property
    def execution(self):
        return self.modules["execution"]

    @property
    def folder_paths(self):
        return self.modules["folder_paths"]

    def node_class(self, node_id: str):
        return self.nodes.NODE_CLASS_MAPPINGS[node_id]

    def pack_node_ids(self) -> list[str]:
        return sorted(k for k in self.nodes.NODE_CLASS_MAPPINGS if k.startswith(PACK_PREFIX))

    def validate(self, prompt: dict) -> tuple:
        """Run ComfyUI's ``validate_prompt``; returns its raw tuple (ok, error, outputs, node_errors)."""
        return asyncio.run(self.execution.validate_prompt(str(uuid.uuid4()), prompt, None))

    def new_executor(self):
        """A ``PromptExecutor`` (classic cache) as the server keeps one: node outputs of unchanged inputs are reused
        across the prompts it runs (``run_prompt(executor=)``)."""
        return self.execution.PromptExecutor(ServerStub(), cache_type=self.execution.CacheType.CLASSIC,
                                             cache_args=dict(EXECUTOR_CACHE_ARGS))

    def run_prompt(self, prompt: dict, outputs: list[str] | None = None, executor=None) -> dict:
        """Validate (failing on *any* node error) and execute an API-format prompt, on a new executor or on
        ``executor`` (:meth:`new_executor`).

        Returns ``{node_id: ui_output}`` from the executor's history; raises :class:`PromptFailed` with
        ComfyUI's payload when validation or execution fails.
        """
        ok, error, good_outputs, node_errors = self.validate(prompt)
        if not ok or node_errors:
            raise PromptFailed(f"prompt invalid: {error} {node_errors}", {"error": error, "node_errors": node_errors})
        executor = executor or self.new_executor()
        stub = executor.server
        stub.messages.clear()
        # A client id makes the executor send its messages (execution_error included) to the stub.
        executor.execute(prompt, str(uuid.uuid4()), {"client_id": "harness"},
                         outputs if outputs is not None else good_outputs)
        if not executor.success:
            errors = [data for event, data in stub.messages if event == "execution_error"]
            detail = errors[0] if errors else stub.messages
            raise PromptFailed(f"execution failed: {detail}", detail)
        return executor.history_result.get("outputs", {})

    def run_node(self, node_id: str, **inputs):
        """Call a node's implementation directly (V3 or V1) and return its output tuple."""
        cls = self.node_class(node_id)
        if hasattr(cls, "GET_SCHEMA"):
            result = cls.execute(**inputs)
            return tuple(result.result) if result.result is not None else ()
        return getattr(cls(), cls.FUNCTION)(**inputs)


_HOST: ComfyHost | None = None


def prepare_import(device: str = "cpu") -> Path:
    """Put ComfyUI's root on ``sys.path`` and set its CLI args (``device``: "cpu" or "cuda") before any
    ``comfy`` module is imported.

    Enough for ``comfy.ops`` / model classes (used to generate test models); :func:`boot` does the rest.
    """
    root = comfyui_root()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import comfy.options

    comfy.options.enable_args_parsing(False)
    from comfy.cli_args import args

    args.cpu = device == "cpu"
    args.disable_api_nodes = True
    return root


def boot(base: Path | None = None, device: str = "cpu", progress_bars: bool = True) -> ComfyHost:
    """Boot ComfyUI in this process once (on ``device``, base directory ``base`` or a new temporary one) and
    load the pack. ``progress_bars=False`` turns ComfyUI's console progress bars off (the benchmark)."""
    global _HOST
    if _HOST is not None:
        return _HOST
    root = prepare_import(device)
    base = make_base_directory(Path(base or tempfile.mkdtemp(prefix="lcmpack-comfy-")))
    if "folder_paths" in sys.modules:
        raise RuntimeError("folder_paths was imported before boot(): the base directory cannot be set")
    from comfy.cli_args import args

    args.base_directory = str(base)
    # ComfyUI's `utils` package must be imported before its `nodes` module (which puts comfy/ first on
    # sys.path, after which `utils` would resolve to comfy/utils.py): ComfyUI's import order, not the pack's.
    importlib.import_module("utils.extra_config")
    import comfy.utils
    import execution
    import folder_paths

    import nodes

    folder_paths.set_output_directory(str(base / "output"))
    folder_paths.set_input_directory(str(base / "input"))
    folder_paths.set_temp_directory(str(base / "temp"))
    import_failed = asyncio.run(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
    LOG.info("ComfyUI booted from %s; core extras failing import: %s", root, import_failed)
    if not progress_bars:
        comfy.utils.set_progress_bar_enabled(False)
    _HOST = ComfyHost(root=root, base=base, device=device,
                      modules={"nodes": nodes, "execution": execution, "folder_paths": folder_paths})
    return _HOST
