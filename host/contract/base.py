"""The contract's shared pieces: versions checked, the report line, resolving a core symbol at use."""
from __future__ import annotations

import importlib
import inspect

CHECKED = "ComfyUI 0.3.75, 0.8.0, 0.33.0"
LINE_PREFIX = "ComfyUI contact"
MARKER = "lcmpack_sampler"  # attribute naming the pack's own sampler functions (any import of the pack)


class ContactMismatch(RuntimeError):
    """Internal: a contact does not match; ``str()`` is the report line. Callers fall back to core's path."""


def line(contact: str, what: str, fallback: str) -> str:
    """The one report line of a contact that did not match."""
    return f"{LINE_PREFIX} {contact}: {what}; {fallback}."


def _resolve(module: str, *attributes: str):
    """``module.attr.attr…`` or None when the module or an attribute is gone (checked at use, not import)."""
    try:
        found = importlib.import_module(module)
    except ImportError:
        return None
    for name in attributes:
        found = getattr(found, name, None)
        if found is None:
            return None
    return found


def _binds(function, *args, **kwargs) -> bool:
    """Whether ``function(*args, **kwargs)`` matches its signature (a renamed or new required argument: no)."""
    try:
        inspect.signature(function).bind(*args, **kwargs)
    except (TypeError, ValueError):
        return False
    return True


def _parameters(function) -> tuple[str, ...]:
    try:
        return tuple(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return ()
