"""A whole fixed-shape sampling loop captured once and replayed: static buffers, capture backends, cache.

Why. At batch 1 an eager SD1.5 UNet step launches ~2 000 kernels and the host, not the GPU, sets the pace
(docs/performance.md): the GPU needs a fraction of the ~25 ms a step takes. A CUDA graph records the kernels of
a whole call once and replays them with one launch; the host work (Python, ComfyUI's per-step machinery, the
scheduler arithmetic) then costs nothing per replay. A graph reads and writes fixed addresses, so

* every input lives in a **static buffer** that is overwritten before each replay (initial noise, the latent,
  the sigmas, the pre-drawn noise of every step, the conditioning),
* everything the host decides (number of steps, which steps re-noise, shapes, dtypes, the weights' identity)
  is part of the **capture key**: a new key captures a new graph, an old key replays,
* the tensors the graph reads but does not own (weights, sampling tables) are kept alive by the captured entry.

What. Pure torch, no ComfyUI: :class:`StaticBuffers` (the loops they feed are in ``fixed_loops.py``), two
capture backends (:class:`CudaGraphBackend`; :class:`EagerReplayBackend`, which re-runs the function on the same
buffers -- the CPU stand-in the tests use) and :class:`CaptureCache` (LRU of captured loops, with the events a
report shows: capture, re-capture and why, seconds).
"""
from __future__ import annotations

import gc
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import torch

LOG = logging.getLogger(__name__)

class FastPathUnavailable(RuntimeError):
    """The fast path cannot run this call; the message says why (the caller falls back to eager)."""


class CaptureFailed(FastPathUnavailable):
    """A capture or its warm-up (where ``torch.compile`` compiles) raised. Raised only after everything the
    attempt allocated was released, and without the original exception attached: its traceback's frames hold
    the tensors of the failed capture, so keeping it would keep them alive."""


# PyTorch CUDA allocators under which a failed capture can be released (its private pool freed with the graph).
CAPTURE_SAFE_ALLOCATORS = ("native",)


def describe(error: BaseException) -> str:
    """``Type: first line of the message`` (at most 200 characters): a report line's view of an error."""
    lines = str(error).splitlines()
    return f"{type(error).__name__}: {(lines[0] if lines else '')[:200]}"


def capture_allocator_reason() -> str | None:
    """Why a CUDA graph must not be captured under the running CUDA allocator (None: it may).

    ComfyUI's ``cuda_malloc.py`` sets ``PYTORCH_CUDA_ALLOC_CONF=backend:cudaMallocAsync`` by default (torch 2.x
    on CUDA; always from CUDA 13 builds) unless started with ``--disable-cuda-malloc``. Under that allocator a
    capture that fails part-way leaves captured allocations whose later free throws inside a destructor
    (``CUDAMallocAsyncAllocator.cpp`` ``free_impl``): ``std::terminate`` ends the whole server (seen on an H100,
    ComfyUI 0.3.75, issue 29). PyTorch's native caching allocator captures into a private pool that
    ``CUDAGraph.reset`` releases, so a failed capture is recoverable there. ``torch.cuda.get_allocator_backend``
    reads the same setting (the environment, before CUDA starts) on every build, CPU-only ones included."""
    backend = torch.cuda.get_allocator_backend()
    if backend in CAPTURE_SAFE_ALLOCATORS:
        return None
    return (f"PyTorch's CUDA allocator is {backend} (ComfyUI's default: PYTORCH_CUDA_ALLOC_CONF=backend:{backend}); "
            "a CUDA graph whose capture fails under it cannot be released and ends the server process: start "
            "ComfyUI with --disable-cuda-malloc to use the captured path")


class StaticBuffers:
    """Named tensors at fixed addresses; :meth:`load` copies new values in (same shapes and dtypes only)."""

    def __init__(self, like: dict[str, torch.Tensor], device):
        self.tensors = {name: torch.empty_like(value, device=device) for name, value in like.items()}

    def load(self, values: dict[str, torch.Tensor]) -> None:
        if values.keys() != self.tensors.keys():
            raise FastPathUnavailable(f"inputs {sorted(values)} differ from the captured {sorted(self.tensors)}")
        for name, value in values.items():
            target = self.tensors[name]
            if value.shape != target.shape or value.dtype != target.dtype:
                raise FastPathUnavailable(f"input {name!r} is {tuple(value.shape)} {value.dtype}, captured "
                                          f"{tuple(target.shape)} {target.dtype}")
            target.copy_(value, non_blocking=True)

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[name]


def signature(tensors: dict[str, torch.Tensor]) -> tuple:
    """Shapes, dtypes and devices of named tensors (a hashable part of a capture key)."""
    return tuple((name, tuple(t.shape), str(t.dtype), str(t.device)) for name, t in sorted(tensors.items()))


def tensor_slots(*roots: torch.nn.Module) -> list[tuple[torch.nn.Module, str]]:
    """(module, attribute) of every parameter and buffer under ``roots``, and of the plain tensor attributes a
    module names in ``plain_tensors`` (the pack's LCM sampling tables): what a captured graph reads."""
    slots = []
    for root in roots:
        for module in root.modules():
            slots += [(module, name) for name, _ in module.named_parameters(recurse=False)]
            slots += [(module, name) for name, value in module.named_buffers(recurse=False) if value is not None]
            slots += [(module, name) for name in getattr(module, "plain_tensors", ())]
    return slots


def pointer_token(slots: list[tuple[torch.nn.Module, str]]) -> int:
    """Hash of the data pointers of ``slots`` now: equal while no tensor was replaced or moved. (A graph reads
    its weights by address, so equal pointers mean the graph is valid, whatever values they hold.)"""
    return hash(tuple(getattr(module, name).data_ptr() for module, name in slots))


class Captured:
    """A captured call: :meth:`replay` refreshes ``outputs`` (static tensors) from the current inputs.
    ``held_bytes``: the memory the capture keeps beyond its inputs (a CUDA graph: its private pool)."""

    def __init__(self, replay: Callable[[], None], outputs: dict[str, torch.Tensor], held_bytes: int = 0):
        self._replay = replay
        self.outputs = outputs
        self.held_bytes = held_bytes

    def replay(self) -> dict[str, torch.Tensor]:
        self._replay()
        return self.outputs


def guarded_capture(record: Callable[[], Captured], release: Callable[[], None]) -> Captured:
    """``record()``; if it raises, ``release()`` and raise :class:`CaptureFailed` with the error's description.

    The release runs after the ``except`` block has ended: by then the exception, its traceback and the frames
    holding the failed attempt's tensors are gone, so the release frees them too. The raised error carries no
    cause or context for the same reason."""
    failure = None
    try:
        return record()
    except Exception as error:  # noqa: BLE001  (capture, compile and CUDA errors come in many types)
        failure = describe(error)
    release()
    raise CaptureFailed(failure)


class CudaGraphBackend:
    """One ``torch.cuda.CUDAGraph`` of the whole function, after ``warmup`` eager runs on a side stream (the
    runs that compile, autotune and load kernels; none of that may happen during capture). A failed warm-up or
    capture releases the graph, its private memory pool and the attempt's tensors before it raises
    :class:`CaptureFailed`."""

    name = "cuda_graph"

    def __init__(self):
        self.graph = None
        self.releases = 0

    def capture(self, fn: Callable[[], dict], warmup: int = 2) -> Captured:
        self.graph = torch.cuda.CUDAGraph()
        return guarded_capture(lambda: self._record(fn, warmup), self.release)

    def _record(self, fn: Callable[[], dict], warmup: int) -> Captured:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(max(1, warmup)):
                fn()
        torch.cuda.current_stream().wait_stream(stream)
        reserved = torch.cuda.memory_reserved()
        with torch.cuda.graph(self.graph):
            outputs = fn()
        # The graph's private pool: the segments the allocator reserved during the capture (nothing else runs).
        return Captured(self.graph.replay, outputs, max(0, torch.cuda.memory_reserved() - reserved))

    def release(self) -> None:
        """Free a failed attempt: the graph and its private pool, then every block the attempt left cached."""
        self.releases += 1
        graph, self.graph = self.graph, None
        if graph is not None:
            try:
                graph.reset()
            except RuntimeError as error:  # a graph whose capture never ended has nothing to reset
                LOG.debug("CUDA graph reset after a failed capture: %s", describe(error))
            del graph
        gc.collect()
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


class EagerReplayBackend:
    """Stand-in for a CUDA graph where none exists (CPU): replay re-runs the function on the same static buffers
    and copies its results into the static outputs -- a graph's contract, with the Python re-executed. A failed
    capture is released the same way (nothing of the attempt stays referenced)."""

    name = "eager_replay"

    def __init__(self):
        self.runs = 0
        self.releases = 0

    def capture(self, fn: Callable[[], dict], warmup: int = 2) -> Captured:
        return guarded_capture(lambda: self._record(fn, warmup), self.release)

    def _record(self, fn: Callable[[], dict], warmup: int) -> Captured:
        for _ in range(warmup):
            fn()
        outputs = {name: value.clone() for name, value in fn().items()}

        def replay():
            self.runs += 1
            for name, value in fn().items():
                outputs[name].copy_(value)

        return Captured(replay, outputs, tensor_bytes(outputs))

    def release(self) -> None:
        self.releases += 1
        gc.collect()


@dataclass
class CaptureEvent:
    """One capture (or failure) of the cache: what, why, how long."""

    kind: str  # "capture", "recapture", "failed"
    reason: str
    seconds: float
    key: Hashable = None

    def line(self) -> str:
        return f"LCM fast path: {self.kind} ({self.reason}) in {self.seconds:.2f} s"


@dataclass
class CacheEntry:
    captured: Captured
    buffers: StaticBuffers
    keep_alive: tuple = ()  # tensors and objects the graph reads but does not own
    nbytes: int = 0  # memory the entry holds: its static buffers and what the capture keeps (Captured.held_bytes)


def tensor_bytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


@dataclass
class CaptureCache:
    """Captured loops by key (least recently used dropped beyond ``capacity`` entries or ``max_bytes`` held, the
    newest always kept); ``weights`` token per key group.

    A key is ``(weights_token, shape_key)``. When a call brings a new weights token every entry of the old token
    is dropped first (its graphs read the old weights), so a LoRA strength change re-captures once. ``sizes``
    keeps the bytes of the last capture of each shape key (after a release too): the room a re-capture asks for.
    """

    capacity: int = 4
    entries: OrderedDict = field(default_factory=OrderedDict)
    events: list[CaptureEvent] = field(default_factory=list)
    failed: dict = field(default_factory=dict)
    weights_token: Hashable = None
    max_bytes: int | None = None
    sizes: dict = field(default_factory=dict)
    released: str | None = None  # why everything was dropped (the next capture says so)

    @property
    def nbytes(self) -> int:
        return sum(entry.nbytes for entry in self.entries.values())

    def release(self, why: str) -> tuple[int, int]:
        """Drop every entry (their graphs and pools go with them); ``(entries, bytes)`` dropped."""
        dropped = (len(self.entries), self.nbytes)
        self.entries, self.weights_token, self.released = OrderedDict(), None, why
        self.failed.clear()
        return dropped

    def get(self, weights_token: Hashable, shape_key: Hashable) -> CacheEntry | None:
        """The entry of the key, or None; a new weights token drops the old token's entries now (their graphs read
        weights that moved), before the capture that follows allocates."""
        if weights_token != self.weights_token and self.entries:
            self.entries = OrderedDict()
        key = (weights_token, shape_key)
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
        return entry

    def reason_for(self, weights_token: Hashable, shape_key: Hashable) -> tuple[str, str]:
        """("capture" | "recapture", why) for a key that is not cached."""
        if self.released and not self.entries:
            return "recapture", self.released
        if self.weights_token is not None and weights_token != self.weights_token:
            return "recapture", "weights changed (LoRA / patches / model sampling)"
        if self.entries:
            return "capture", "new shapes or schedule"
        return "capture", "first call"

    def put(self, weights_token: Hashable, shape_key: Hashable, entry: CacheEntry, event: CaptureEvent) -> None:
        if weights_token != self.weights_token:
            self.entries = OrderedDict((k, v) for k, v in self.entries.items() if k[0] == weights_token)
            self.weights_token = weights_token
        self.entries[(weights_token, shape_key)] = entry
        self.sizes[shape_key], self.released = entry.nbytes, None
        while len(self.sizes) > 64:
            del self.sizes[next(iter(self.sizes))]
        while len(self.entries) > self.capacity or (
                self.max_bytes is not None and len(self.entries) > 1 and self.nbytes > self.max_bytes):
            self.entries.popitem(last=False)
        self.record(event)

    def record(self, event: CaptureEvent) -> None:
        self.events.append(event)
        del self.events[:-64]
        LOG.info(event.line())


def report_once(reported: set, message: str) -> None:
    """Log a fallback ``message`` at WARNING the first time (per ``reported`` set), at DEBUG afterwards: one clear
    line per model and reason, no flood at 30 calls a second."""
    LOG.log(logging.DEBUG if message in reported else logging.WARNING, message)
    reported.add(message)


def timed_capture(backend, fn: Callable[[], dict], warmup: int) -> tuple[Captured, float]:
    """Capture ``fn`` with ``backend``; the seconds include warm-up (compilation happens there)."""
    start = time.perf_counter()
    captured = backend.capture(fn, warmup)
    if torch.cuda.is_available() and isinstance(backend, CudaGraphBackend):
        torch.cuda.synchronize()
    return captured, time.perf_counter() - start
