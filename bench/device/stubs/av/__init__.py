"""Device-only stand-in for PyAV (35 MB wheel): ComfyUI's comfy_api imports av at module level for video
nodes, which the benchmarks never run. Any use raises."""
class _Missing:
    def __init__(self, *a, **k):
        raise RuntimeError("PyAV is stubbed on the device payload")
def __getattr__(name):
    return _Missing
