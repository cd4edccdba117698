"""Stage 3, stats: numbers about aligned tensors.

Owns the norm-delta engine (``engine``: plan, CPU and torch/CUDA paths), the forked worker pool
(``pool``), roll-ups per module and phoneme language (``rollup``) and the spectrum of a change
(``spectrum``, ``spectrum_pick``).

May import: ``gsvinspect.load``, ``gsvinspect.align`` and the foundation. Never export/report/cli.
"""
