"""Stage 4, export: write a fine-tune as a new base model.

Owns planning and writing (``exporter``), the option vocabulary (``options``), LoRA merging (``lora``),
upstream GPT-SoVITS version rules (``upstream_version``), the torch-compatible writer
(``torch_writer``) and the atomic temp-fsync-verify-rename writer (``atomic``).

May import: ``gsvinspect.load``, ``gsvinspect.align``, ``gsvinspect.stats`` and the foundation.
Never report/cli.
"""
