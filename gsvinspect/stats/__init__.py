"""Stage 3, stats: numbers about aligned tensors.

Owns the norm-delta engine (entry point ``engine.compute_stats``; its parts: ``results`` types
and sums algebra, ``plan``, numpy ``kernels``, ``files`` (pread sources), the ``cpu`` path, the
``torch_engine`` (CUDA) path, the ``device`` cost model), the forked worker pool
(``pool``), roll-ups per module and phoneme language (``rollup``) and the spectrum of a change
(``spectrum``, ``spectrum_pick``).

May import: ``gsvinspect.load``, ``gsvinspect.align`` and the foundation. Never export/report/cli.
"""
