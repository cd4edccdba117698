"""Which phoneme symbol (and language) each row of a text-embedding table stands for.

GPT-SoVITS indexes its phoneme embeddings (GPT ``model.ar_text_embedding.word_embeddings.weight``,
SoVITS ``enc_p.text_embedding.weight``) by position in its symbol list: v1 has 322 symbols, v2
has 732. The GPT v1 table has 512 rows (``phoneme_vocab_size``), of which only the first 322 are
ever looked up. Labelling rows lets the stats say *which languages' rows moved* in a fine-tune.
The lists ship in ``gsvinspect/data/symbols.json`` (copied from upstream text/symbols*.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

SYMBOL_SETS = ("v1", "v2")
UNUSED = "unused"      # language tag of rows past the end of the symbol list (GPT v1: rows 322-511)
UNKNOWN = "unknown"    # language tag when the row count matches no known symbol set

# Row counts of embedding tables -> symbol set. 512 is the GPT v1 phoneme_vocab_size.
_ROWS_TO_SET = {322: "v1", 512: "v1", 732: "v2"}


@dataclass(frozen=True, slots=True)
class Symbol:
    """One embedding row's meaning: its index, the phoneme, and the language list it came from."""

    index: int
    symbol: str
    language: str   # pad, punctuation, zh, ja, en, ko, yue; or "unused"/"unknown"


@lru_cache(maxsize=None)
def _load() -> dict:
    with resources.files("gsvinspect.data").joinpath("symbols.json").open("r", encoding="utf-8") as fh:
        return json.load(fh)


@lru_cache(maxsize=None)
def symbols(symbol_set: str) -> tuple[Symbol, ...]:
    """The symbol list of ``"v1"`` (322) or ``"v2"`` (732), in embedding-row order."""
    if symbol_set not in SYMBOL_SETS:
        raise ValueError(f"unknown symbol set {symbol_set!r} (known: {', '.join(SYMBOL_SETS)})")
    return tuple(Symbol(int(e["index"]), str(e["symbol"]), str(e["language"])) for e in _load()[symbol_set])


def symbol_set_for_rows(n_rows: int) -> str | None:
    """The symbol set an embedding table with `n_rows` rows uses, or None if no set fits."""
    return _ROWS_TO_SET.get(n_rows)


def label_rows(n_rows: int, symbol_set: str | None = None) -> list[Symbol]:
    """One Symbol per row of an `n_rows`-row embedding table.

    `symbol_set` defaults to the one the row count implies. Rows beyond the symbol list are tagged
    ``"unused"`` (GPT v1 keeps 190 spare rows); with no known set every row is ``"unknown"``.
    """
    symbol_set = symbol_set or symbol_set_for_rows(n_rows)
    if symbol_set is None:
        return [Symbol(i, f"#{i}", UNKNOWN) for i in range(n_rows)]
    table = symbols(symbol_set)
    return [table[i] if i < len(table) else Symbol(i, f"#{i}", UNUSED) for i in range(n_rows)]


def languages(symbol_set: str) -> list[str]:
    """Languages of a symbol set in the order upstream lists them (pad, punctuation, zh, ...)."""
    seen: dict[str, None] = {}
    for s in symbols(symbol_set):
        seen.setdefault(s.language, None)
    return list(seen)
