"""A pass over a pickle's opcodes before any unpickler sees them: what would hurt the C unpickler.

The C unpickler is fast and never runs code of ours, so a few attacks must be stopped before it
starts, by reading the opcodes (nothing is built here):

* memo indices no honest pickle has: CPython sizes its memo array to twice the largest PUT index,
  so a 12-byte pickle with LONG_BINPUT 2**28 allocates and zeroes 4 GiB. ``PUT`` takes its index
  as text, parsed like ``int()`` (``134_217_728``, ``+134217728`` and `` 134217728`` included);
* strings and bytes over `MAX_STRING_BYTES`, integers over `MAX_LONG_BYTES` (a 100 MB integer is
  slow to build and cannot even be printed);
* it counts the tuple-building opcodes: hashing a tuple (a dict key, a set member) recurses in C
  without any guard, so a 1,000,000-deep tuple key kills the interpreter with SIGSEGV. Each such
  opcode adds at most one level, so the count bounds the depth before anything is built, and
  `safe_unpickle` gives the unpickler a C stack deep enough for it (nesting is then refused by
  depth, iteratively, by `safe_unpickle.check_structure`).

Cost: one Python step per opcode (about 25 per tensor).
"""

from __future__ import annotations

import pickletools
import struct

from .allowlist import MAX_STRING_BYTES, Bad

MAX_LONG_BYTES = 256          # 2**2048: far past any honest integer, printable (< 4300 digits)

# opcode byte -> how its argument is laid out (from pickletools' own opcode table):
# n >= 0 fixed size, _LINE / _TWO_LINES newline-terminated, -10 - k a k-byte length prefix
_LINE, _TWO_LINES, _UNKNOWN = -1, -2, -100
_ARG_LAYOUT = [_UNKNOWN] * 256
for _op in pickletools.opcodes:
    _code = ord(_op.code.encode("latin1"))
    _a = _op.arg
    if _a is None:
        _lay = 0
    elif _a.n >= 0:
        _lay = _a.n
    elif _a.n == pickletools.UP_TO_NEWLINE:
        _lay = _TWO_LINES if _op.name in ("GLOBAL", "INST") else _LINE
    else:
        _lay = -10 - {pickletools.TAKEN_FROM_ARGUMENT1: 1, pickletools.TAKEN_FROM_ARGUMENT4: 4,
                      pickletools.TAKEN_FROM_ARGUMENT4U: 4, pickletools.TAKEN_FROM_ARGUMENT8U: 8}[_a.n]
    _ARG_LAYOUT[_code] = _lay
_ARG_LAYOUT[ord(".")] = _UNKNOWN  # STOP ends the scan

_OPS = {name: ord(op.code.encode("latin1")) for name, op in ((o.name, o) for o in pickletools.opcodes)}
_LONG_BINPUT, _PUT, _BINSTRING = _OPS["LONG_BINPUT"], _OPS["PUT"], _OPS["BINSTRING"]
_LONG4 = _OPS["LONG4"]
_TUPLE_OPS = {_OPS[n] for n in ("TUPLE", "TUPLE1", "TUPLE2", "TUPLE3")}
_STRINGS = {_OPS[n] for n in ("BINUNICODE", "BINUNICODE8", "BINBYTES", "BINBYTES8", "BYTEARRAY8",
                              "BINSTRING")}


# opcode byte -> 1 + its argument size, for the fixed-size opcodes that need no check (most of a
# torch pickle: BINGET, BININT1, MARK, REDUCE...); 0 for the ones scan_pickle looks at
_SKIP = [0] * 256
for _code, _lay in enumerate(_ARG_LAYOUT):
    if _lay >= 0 and _code not in _TUPLE_OPS and _code != _LONG_BINPUT:
        _SKIP[_code] = 1 + _lay
_UINT32 = struct.Struct("<I").unpack_from


def scan_pickle(data: bytes) -> int:
    """Raise Bad for the attacks above; return the number of tuple-building opcodes.

    That number bounds how deep the pickle's tuples can nest (each opcode adds at most one level).
    """
    n = len(data)
    pos = 0
    layout = _ARG_LAYOUT
    skip = _SKIP
    uint32 = _UINT32
    from_bytes = int.from_bytes
    find = data.find
    tuples = 0
    while pos < n:
        op = data[pos]
        step = skip[op]
        if step:            # the common case: a fixed-size opcode without anything to check
            pos += step
            continue
        lay = layout[op]
        pos += 1
        if lay >= 0:
            if lay == 0:    # TUPLE, TUPLE1..3
                tuples += 1
                continue
            # LONG_BINPUT
            idx = uint32(data, pos)[0] if pos + 4 <= n else from_bytes(data[pos:pos + 4], "little")
            if idx >= n:
                raise Bad(f"pickle memo index {idx} is larger than the pickle (crafted)")
            pos += lay
        elif lay <= -11:
            size = -10 - lay
            length = from_bytes(data[pos:pos + size], "little", signed=op == _BINSTRING)
            if length > MAX_STRING_BYTES and op in _STRINGS:
                raise Bad(f"pickle holds a string of {length} bytes (limit {MAX_STRING_BYTES})")
            if op == _LONG4 and length > MAX_LONG_BYTES:
                raise Bad(f"pickle holds an integer of {length} bytes (limit {MAX_LONG_BYTES})")
            if length < 0:
                return tuples
            pos += size + length
        elif lay == _LINE:
            end = find(b"\n", pos)
            if end < 0:
                return tuples
            if end - pos > MAX_STRING_BYTES:
                raise Bad(f"pickle holds a text line of {end - pos} bytes (limit {MAX_STRING_BYTES})")
            if op == _PUT:
                _check_put(data[pos:end], n)
            pos = end + 1
        elif lay == _TWO_LINES:
            end = find(b"\n", pos)
            end = find(b"\n", end + 1) if end >= 0 else -1
            if end < 0:
                return tuples
            pos = end + 1
        else:
            return tuples  # STOP or an unknown opcode: the unpickler reports it
    return tuples


def _check_put(line: bytes, n: int) -> None:
    """PUT's index is text that CPython parses as int() does (underscores, signs, spaces)."""
    try:
        idx = int(line)
    except ValueError:
        return  # the unpickler refuses it itself
    if idx < 0 or idx >= n:
        raise Bad(f"pickle memo index {idx} is larger than the pickle (crafted)")
