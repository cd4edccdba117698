"""Stage 4, export: write a fine-tune as a new base model.

Owns, in the order an export runs: the option vocabulary (``options``), the plan and report types
(``plan_data``), ``plan_export`` as named steps (``plan``), layouts per kind and version
(``layouts``), tensor sources and their computation (``mixing``), LoRA merging (``lora``), the
object written and its size fitting (``build``), the check of the written file (``verify``),
upstream GPT-SoVITS version rules (``upstream_version``), the torch-compatible writer
(``torch_writer``), the atomic temp-fsync-verify-rename writer (``atomic``) and ``run_export`` /
``export`` (``writer``).

May import: ``gsvinspect.load``, ``gsvinspect.align``, ``gsvinspect.stats`` and the foundation.
Never report/cli.
"""
