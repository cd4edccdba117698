"""gsvinspect: inspect, remap and export GPT-SoVITS checkpoints.

The library is laid out as its pipeline, one stage per package; a stage imports only the stages
before it (``tests/test_layering.py`` keeps it so):

* ``load``   — zip index, restricted unpickler, checkpoint model, identity (layout/version), manifests
* ``align``  — rules, key alignment, rule suggestion, GPT-SoVITS knowledge (findings, ``check``)
* ``stats``  — norm-delta engine (CPU and torch/CUDA), worker pool, roll-ups, spectrum
* ``export`` — export planning, mixing, LoRA merge, upstream version rules, torch writer, atomic write
* ``report`` — text, rich, JSON and Markdown renderers
* ``synth``  — generated GPT-SoVITS checkpoints for the demo, tests and benches
* ``cli``    — argument parsing and one module per command

The library never imports Textual, and imports torch only when tensor data is needed, so listing a
multi-GB checkpoint costs a zip directory read and a restricted unpickle. The names below are the
public surface (the functions ``align`` and ``export`` are reached through their stages,
``gsvinspect.align.alignment.align`` and ``gsvinspect.export.writer.export``, since the package names
are taken); they are imported on first use, so ``import gsvinspect`` stays cheap.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_PUBLIC = {
    "open_checkpoint": "gsvinspect.load.checkpoint",
    "Checkpoint": "gsvinspect.load.checkpoint",
    "Alignment": "gsvinspect.align.alignment",
    "Status": "gsvinspect.align.alignment",
    "RuleSet": "gsvinspect.align.rules",
    "parse_rules": "gsvinspect.align.rules",
    "load_rules": "gsvinspect.align.rules",
    "suggest_rules": "gsvinspect.align.suggest",
    "diagnose": "gsvinspect.align.knowledge",
    "check_against": "gsvinspect.align.check",
    "compute_stats": "gsvinspect.stats.engine",
    "rollup": "gsvinspect.stats.rollup",
    "spectrum": "gsvinspect.stats.spectrum",
    "plan_export": "gsvinspect.export.plan",
    "run_export": "gsvinspect.export.writer",
    "CheckpointError": "gsvinspect.errors",
    "GsvError": "gsvinspect.errors",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'gsvinspect' has no attribute {name!r}")
    value = globals()[name] = getattr(importlib.import_module(module), name)
    return value
