"""Stage 5, triage: a whole training run at once (``gsvinspect scan``).

Owns walking folders for checkpoints (``walk``), one metadata-only row per file (``entry``: layout,
version, epoch/step and where they came from, dtypes, scaler, base usability), the relations
between files (``relations``: which pretrained base each fine-tune came from and by which rule,
which exports are copies of which training checkpoint), the scan itself (``scan``: groups by
experiment and stage, sorted by step; ``cache``: rows of unchanged files kept between scans;
``readahead``: kernel read-ahead advice for cold disks) and the drift of every checkpoint across a
run (``drift``: from the base and from the previous checkpoint, per module and phoneme language,
with health and jumps; every byte read once, with the stats engine's kernels; its results and the
jump rule are ``trajectory``).

May import: ``gsvinspect.load``, ``gsvinspect.align``, ``gsvinspect.stats``, ``gsvinspect.export``
and the foundation. Never report/cli or Textual.
"""
