"""Stage 5, report: turn results into text, rich tables, JSON and Markdown.

Owns terminal/JSON output helpers (``output``), ``info`` summaries (``summary``), the diff report
(``diff``) and statistics tables (``stats``).

May import: every library stage below it (load, align, stats, export). Never cli or Textual.
"""
