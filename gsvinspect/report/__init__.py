"""Stage 5, report: turn results into text, rich tables, JSON and Markdown.

Owns terminal/JSON output helpers (``output``), the shared number and shape formats
(``numbers``), ``info`` summaries (``summary``), the diff report (``diff``), the ``check`` result
(``check``), statistics tables (``stats``) and the one-row-per-key view behind ``diff --csv``
(``per_key``).

May import: every library stage below it (load, align, stats, export). Never cli or Textual.
"""
