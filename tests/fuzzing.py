"""Shared by tests/test_fuzz_*.py: hypothesis profiles, a per-example hang guard and the unpickle tripwire.

Profiles (``HYPOTHESIS_PROFILE``): ``ci`` (default, what ``make test`` runs: about a minute for all fuzz tests
on 2 CPU cores) and ``long`` (``scripts/fuzz_long.py``: at least 10 000 examples per test). Neither keeps a
hypothesis database: a failure prints its example and the ``@reproduce_failure`` blob.

The tripwire: :data:`SENTINEL_MODULE` is a module whose function ``detonate`` records that it ran; pickle
payloads in the fuzz corpus call it through ``GLOBAL``/``REDUCE``. An audit hook records every ``pickle.find_class``
event (raised by Python's ``pickle`` and ``_pickle`` for each global a pickle names) while :func:`tripwire` is
armed. The reader must never trigger either: it only uses ``torch.load(weights_only=True)``, whose unpickler
resolves nothing outside its allowlist and raises no such event.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import types

from hypothesis import HealthCheck, settings

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
LONG_EXAMPLES = 10_000
# Far above any example's runtime (≤ 2.3 s seen at load 12 on 2 cores): a first long run with 20 s flagged two
# examples that a replay ran in milliseconds (CPU starvation, not a hang).
HANG_SECONDS = 120

_COMMON = {"deadline": None, "database": None, "print_blob": True,
           "suppress_health_check": (HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much)}
settings.register_profile("ci", max_examples=60, **_COMMON)
settings.register_profile("long", max_examples=LONG_EXAMPLES, **_COMMON)
settings.load_profile(PROFILE)


def examples(ci: int) -> settings:
    """``@examples(n)``: ``n`` examples in the ci profile, the profile's count otherwise (long: 10 000)."""
    return settings(max_examples=ci) if PROFILE == "ci" else settings()


class Hang(AssertionError):
    """One example ran past :data:`HANG_SECONDS`."""


@contextlib.contextmanager
def no_hang(seconds: float = HANG_SECONDS):
    """Fail an example that runs longer than ``seconds`` (SIGALRM; main thread only, else no guard).

    pytest-timeout (pyproject) stays the backstop for code that does not return to the interpreter.
    """
    if sys.platform == "win32" or not _in_main_thread():
        yield
        return

    def _alarm(signum, frame):
        raise Hang(f"one example ran longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


# ---------------------------------------------------------------------------------------------------------
# The unpickle tripwire
# ---------------------------------------------------------------------------------------------------------

SENTINEL_MODULE = "lcmpack_fuzz_sentinel"
_STATE = {"armed": False, "detonated": 0, "find_class": []}


def _detonate(*args):
    _STATE["detonated"] += 1
    return {}


def _audit(event: str, args) -> None:
    if _STATE["armed"] and event == "pickle.find_class":
        _STATE["find_class"].append(tuple(str(a) for a in args))


def _install() -> None:
    if SENTINEL_MODULE in sys.modules:
        return
    module = types.ModuleType(SENTINEL_MODULE)
    module.detonate = _detonate
    sys.modules[SENTINEL_MODULE] = module
    sys.addaudithook(_audit)  # hooks cannot be removed: it only records while armed


_install()


@contextlib.contextmanager
def tripwire():
    """Arm the tripwire around a read; yields the state dict (``detonated``, ``find_class`` events)."""
    _STATE.update(armed=True, detonated=0, find_class=[])
    try:
        yield _STATE
    finally:
        _STATE["armed"] = False


def sentinel_pickle(protocol: int = 2) -> bytes:
    """A pickle that calls ``lcmpack_fuzz_sentinel.detonate()`` when unpickled by anything but an allowlist."""
    if protocol >= 4:  # SHORT_BINUNICODE module, name; STACK_GLOBAL; EMPTY_TUPLE; REDUCE; STOP
        module, name = SENTINEL_MODULE.encode(), b"detonate"
        return (b"\x80\x04\x8c" + bytes([len(module)]) + module + b"\x8c" + bytes([len(name)]) + name
                + b"\x93)R.")
    return b"\x80\x02c" + SENTINEL_MODULE.encode() + b"\ndetonate\n)R."
