"""Stage 2, align: pair the keys of two checkpoints.

Owns the rules language (``rules``), key alignment (``alignment``), rule suggestion (``suggest``) and
GPT-SoVITS knowledge about what a pair means (``knowledge``: findings, wrapper prefixes, manifests).

May import: ``gsvinspect.load`` and the foundation (``errors``, ``meta``). Never stats/export/report/cli.
"""
