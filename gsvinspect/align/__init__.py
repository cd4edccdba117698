"""Stage 2, align: pair the keys of two checkpoints.

Owns the rules language (``rules``), key alignment (``alignment``), rule suggestion (``suggest``),
GPT-SoVITS knowledge about what a pair means (``knowledge``: findings) and one file against the key
set a GPT-SoVITS loader expects (``check``).

May import: ``gsvinspect.load`` and the foundation (``errors``, ``meta``). Never stats/export/report/cli.
"""
