"""gsvinspect: inspect, remap and export GPT-SoVITS checkpoints.

The library half never imports Textual, and imports torch only when tensor data is needed,
so listing a multi-GB checkpoint costs a zip directory read and a restricted unpickle.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "open_checkpoint"]


def open_checkpoint(path, *, trust: bool = False):
    """Open a checkpoint lazily (see :func:`gsvinspect.checkpoint.open_checkpoint`)."""
    from .checkpoint import open_checkpoint as _open

    return _open(path, trust=trust)
