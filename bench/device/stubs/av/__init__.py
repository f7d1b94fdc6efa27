"""Device-only stand-in for PyAV (35 MB wheel): ComfyUI's comfy_api imports av at module level for video
nodes, which the benchmarks never run. Any use raises. Every ``av.*`` submodule (``av.container``,
``av.video.reformatter`` in ComfyUI 0.33, ...) imports as a module whose every attribute is the same stand-in."""
import importlib.abc
import importlib.machinery
import sys
import types


class _MissingType(type):
    def __getattr__(cls, name):  # enum-like constants (``av.video.reformatter.ColorTrc.ARIB_STD_B67``)
        if name.startswith("__"):
            raise AttributeError(name)
        return cls


class _Missing(metaclass=_MissingType):
    def __init__(self, *a, **k):
        raise RuntimeError("PyAV is stubbed on the device payload")


def _attribute(prefix):
    """Lower-case names are submodules (``av.error``), the rest the stand-in class (``av.VideoFrame``)."""
    def getattr_(name):
        if name.startswith("__"):  # __file__, __version__, ...: absent, as on a module that has none
            raise AttributeError(name)
        if name.islower() and not name.startswith("_"):
            import importlib

            return importlib.import_module(f"{prefix}.{name}")
        return _Missing

    return getattr_


__getattr__ = _attribute("av")


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name.startswith("av.") and name not in sys.modules:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []
        module.__getattr__ = _attribute(spec.name)
        return module

    def exec_module(self, module):
        return None


sys.meta_path.insert(0, _StubFinder())
