"""Crafted hostile and broken checkpoints, built byte by byte for the safety tests.

Why hand-written opcodes: a pickle that really calls `os.system` can only be produced by writing
its opcodes ourselves (pickling a function never calls it). Each payload here would create the
marker file (or worse) if a loader executed it; the tests assert the marker never appears.

The zip container is a real one: `torch.save` writes a small benign checkpoint once, then
`rezip` copies its records with zipfile (ZIP_STORED, same names and order) and swaps in our
`data.pkl`, optionally overwriting the first two bytes like GPT-SoVITS's my_save2 ("05").
"""

from __future__ import annotations

import io
import struct
import sys
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

# the child-process peak-RSS helpers the benchmarks use: tests and bench measure the same way
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import _proc  # noqa: E402

PEAK_RSS_SNIPPET = _proc.PEAK_RSS_SNIPPET  # defines _peak_rss_kb() in a child that reports its own peak

# ---------------------------------------------------------------------------------------------
# a tiny pickle assembler (protocol 2 framing, opcodes from pickletools' table)

PROTO2 = b"\x80\x02"
PROTO4 = b"\x80\x04"
MARK, STOP, TUPLE, REDUCE, BUILD = b"(", b".", b"t", b"R", b"b"
EMPTY_DICT, EMPTY_LIST, EMPTY_TUPLE, SETITEMS, SETITEM, APPENDS, APPEND = b"}", b"]", b")", b"u", b"s", b"e", b"a"
NONE, NEWTRUE, NEWFALSE, STACK_GLOBAL, BINPERSID, OBJ = b"N", b"\x88", b"\x89", b"\x93", b"Q", b"o"


def g(module: str, name: str) -> bytes:
    """GLOBAL opcode: push module.name (resolved by find_class)."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def sg(module: str, name: str) -> bytes:
    """STACK_GLOBAL with both names pushed as strings."""
    return s(module) + s(name) + STACK_GLOBAL


def s(text: str) -> bytes:
    raw = text.encode("utf-8")
    return b"X" + struct.pack("<I", len(raw)) + raw


def b_(data: bytes) -> bytes:
    """Protocol 3+ BINBYTES (the tests only feed these to our unpickler and to torch's)."""
    return b"B" + struct.pack("<I", len(data)) + data


def i(n: int) -> bytes:
    if 0 <= n < 256:
        return b"K" + bytes([n])
    if -(2 ** 31) <= n < 2 ** 31:
        return b"J" + struct.pack("<i", n)
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw  # LONG1


def t(*items: bytes) -> bytes:
    return MARK + b"".join(items) + TUPLE


def call(fn: bytes, *args: bytes) -> bytes:
    return fn + t(*args) + REDUCE


def d(*pairs: tuple[bytes, bytes]) -> bytes:
    if not pairs:
        return EMPTY_DICT
    return EMPTY_DICT + MARK + b"".join(k + v for k, v in pairs) + SETITEMS


def lst(*items: bytes) -> bytes:
    return EMPTY_LIST + (MARK + b"".join(items) + APPENDS if items else b"")


def put(n: int) -> bytes:
    return b"q" + bytes([n])  # BINPUT


def get(n: int) -> bytes:
    return b"h" + bytes([n])  # BINGET


def pkl(body: bytes, proto: bytes = PROTO2) -> bytes:
    return proto + body + STOP


def tensor(key: str, numel: int, shape, stride, *, offset: int = 0, storage: str = "FloatStorage") -> bytes:
    """torch._utils._rebuild_tensor_v2(<persistent storage key>, offset, shape, stride, False, OrderedDict())."""
    pid = t(s("storage"), g("torch", storage), s(key), s("cpu"), i(numel))
    return call(g("torch._utils", "_rebuild_tensor_v2"), pid + BINPERSID, i(offset),
                t(*map(i, shape)), t(*map(i, stride)), NEWFALSE, call(g("collections", "OrderedDict")))


# ---------------------------------------------------------------------------------------------
# the benign template written by torch.save

TEMPLATE_KEYS = ("enc_p.proj.weight", "enc_p.proj.bias")


@lru_cache(maxsize=None)
def template_bytes() -> bytes:
    """A real torch.save archive: {'weight': {proj.weight 4x4 f32, proj.bias 4 f32}, 'config': {...}}."""
    import torch

    w = torch.arange(16, dtype=torch.float32).reshape(4, 4)
    b = torch.arange(4, dtype=torch.float32) + 100
    buf = io.BytesIO()
    torch.save({"weight": {TEMPLATE_KEYS[0]: w, TEMPLATE_KEYS[1]: b}, "config": {"sr": 32000}}, buf)
    return buf.getvalue()


def benign_weights() -> bytes:
    """The template's two tensors as hand-written opcodes (storages '0' and '1' of the template)."""
    return d((s(TEMPLATE_KEYS[0]), tensor("0", 16, (4, 4), (4, 1))),
             (s(TEMPLATE_KEYS[1]), tensor("1", 4, (4,), (1,))))


def rezip(pickle_bytes: bytes | None, *, header: bytes = b"PK", records: dict[str, bytes | None] | None = None,
          compress: set[str] = frozenset(), base: bytes | None = None) -> bytes:
    """Copy the template archive record by record (ZIP_STORED, same names), replacing data.pkl.

    records: extra replacements by short name ("data/0", "byteorder"; None drops the record,
    a name not in the template is appended). compress: short names written ZIP_DEFLATED.
    """
    src = zipfile.ZipFile(io.BytesIO(base or template_bytes()))
    prefix = src.namelist()[0].split("/", 1)[0] + "/"
    repl = dict(records or {})
    if pickle_bytes is not None:
        repl["data.pkl"] = pickle_bytes
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name in src.namelist():
            short = name[len(prefix):]
            data = repl.pop(short, src.read(name)) if short in repl else src.read(name)
            if data is None:
                continue
            z.writestr(zipfile.ZipInfo(name), data,
                       compress_type=zipfile.ZIP_DEFLATED if short in compress else zipfile.ZIP_STORED)
        for short, data in repl.items():
            if data is not None:
                z.writestr(zipfile.ZipInfo(prefix + short), data,
                           compress_type=zipfile.ZIP_DEFLATED if short in compress else zipfile.ZIP_STORED)
    raw = bytearray(out.getvalue())
    if header != b"PK":
        raw[0:2] = header
    return bytes(raw)


# ---------------------------------------------------------------------------------------------
# malicious payloads

@dataclass(frozen=True)
class Payload:
    name: str
    what: str            # one line: what it would do if executed
    expect: str          # the global the refusal must name (substring of the error)
    build: object        # callable(marker: Path, workdir: Path) -> bytes (the pickle *expression*)


def _touch(marker: Path) -> str:
    return f"touch {marker}"


def _legacy_os_system(marker: Path) -> bytes:
    """A complete pickle that runs os.system when unpickled (for nested loads)."""
    return pkl(call(g("os", "system"), s(_touch(marker))))


def _runpy_script(marker: Path, workdir: Path) -> Path:
    script = workdir / "evil_script.py"
    script.write_text(f"open({str(marker)!r}, 'w').close()\n")
    return script


def _inner_file(marker: Path, workdir: Path) -> Path:
    inner = workdir / "inner_evil.pth"
    inner.write_bytes(_legacy_os_system(marker))
    return inner


PAYLOADS: list[Payload] = [
    Payload("os_system", "os.system('touch MARKER')", "os.system",
            lambda m, w: call(g("os", "system"), s(_touch(m)))),
    Payload("posix_system", "posix.system (os under its C name)", "posix.system",
            lambda m, w: call(g("posix", "system"), s(_touch(m)))),
    Payload("subprocess_popen", "subprocess.Popen(['touch', MARKER])", "subprocess.Popen",
            lambda m, w: call(g("subprocess", "Popen"), lst(s("touch"), s(str(m))))),
    Payload("builtins_eval", "builtins.eval(\"open(MARKER,'w')\")", "builtins.eval",
            lambda m, w: call(g("builtins", "eval"), s(f"open({str(m)!r}, 'w').close()"))),
    Payload("builtins_exec", "builtins.exec('import os; os.system(...)')", "builtins.exec",
            lambda m, w: call(g("builtins", "exec"), s(f"import os; os.system({_touch(m)!r})"))),
    Payload("py2_builtin_eval", "__builtin__.eval: the Python 2 name real unpicklers map to builtins",
            "eval", lambda m, w: call(g("__builtin__", "eval"), s(f"open({str(m)!r}, 'w').close()"))),
    Payload("getattr_import_chain", "getattr(__import__('os'), 'system')('touch MARKER')", "builtins.getattr",
            lambda m, w: call(call(g("builtins", "getattr"), call(g("builtins", "__import__"), s("os")), s("system")),
                              s(_touch(m)))),
    Payload("runpy_run_path", "runpy.run_path(script that writes MARKER)", "runpy.run_path",
            lambda m, w: call(g("runpy", "run_path"), s(str(_runpy_script(m, w))))),
    Payload("importlib_antigravity", "importlib.import_module('antigravity') opens a browser ($BROWSER)",
            "importlib.import_module", lambda m, w: call(g("importlib", "import_module"), s("antigravity"))),
    Payload("webbrowser_open", "webbrowser.open(url) runs $BROWSER (set to touch MARKER)", "webbrowser.open",
            lambda m, w: call(g("webbrowser", "open"), s("gsv-hostile-url"))),
    Payload("partial_nested_torch_load",
            "functools.partial(torch.load, weights_only=False)(inner.pth), inner runs os.system",
            "functools.partial",
            lambda m, w: (call(g("functools", "partial"), g("torch", "load"))
                          + t(g("torch", "load"), t(s(str(_inner_file(m, w)))), d((s("weights_only"), NEWFALSE)), NONE)
                          + BUILD + EMPTY_TUPLE + REDUCE)),
    Payload("partial_os_system", "functools.partial(os.system, 'touch MARKER')()", "functools.partial",
            lambda m, w: call(g("functools", "partial"), g("os", "system"), s(_touch(m))) + EMPTY_TUPLE + REDUCE),
    Payload("torch_serialization_load", "torch.serialization.load(inner.pth) of a pickle running os.system",
            "torch.serialization.load",
            lambda m, w: call(g("torch.serialization", "load"), s(str(_inner_file(m, w))))),
    Payload("storage_load_from_bytes",
            "torch.storage._load_from_bytes(b): a storage helper that torch.loads b with weights_only=False",
            "torch.storage._load_from_bytes",
            lambda m, w: call(g("torch.storage", "_load_from_bytes"), b_(_legacy_os_system(m)))),
    Payload("allowed_module_attr_chain", "STACK_GLOBAL('pathlib', 'os.system'): os reached through pathlib",
            "pathlib.os.system", lambda m, w: call(sg("pathlib", "os.system"), s(_touch(m)))),
    Payload("hparams_method_chain", "utils.HParams looks harmless; 'Path.write_text' reaches a method",
            "pathlib.Path.write_text",
            lambda m, w: call(sg("pathlib", "Path.write_text"), call(g("pathlib", "Path"), s(str(m))), s("x"))),
    Payload("copy_reg_py2", "copy_reg._reconstructor (Python 2 name of copyreg) rebuilding os._wrap_close",
            "copy", lambda m, w: call(g("copy_reg", "_reconstructor"), g("os", "_wrap_close"), g("builtins", "object"),
                                      NONE)),
    Payload("build_setstate", "BUILD puts __setstate__=os.system on an OrderedDict, second BUILD calls it",
            "os.system",
            lambda m, w: (call(g("collections", "OrderedDict")) + t(NONE, d((s("__setstate__"), sg("os", "system"))))
                          + BUILD + s(_touch(m)) + BUILD)),
    Payload("inst_opcode", "protocol-0 INST 'os system'", "os.system",
            lambda m, w: MARK + s(_touch(m)) + b"ios\nsystem\n"),
    Payload("obj_opcode", "OBJ opcode on subprocess.check_call", "subprocess.check_call",
            lambda m, w: MARK + g("subprocess", "check_call") + lst(s("touch"), s(str(m))) + OBJ),
    Payload("stack_global_memo", "STACK_GLOBAL whose names come from the memo (stored as config values)",
            "os.system",
            lambda m, w: (d((s("a"), s("os") + put(1)), (s("b"), s("system") + put(2))) + b"0"  # POP the dict
                          + get(1) + get(2) + STACK_GLOBAL + t(s(_touch(m))) + REDUCE)),
    Payload("stack_global_device_str", "STACK_GLOBAL with names computed by torch.device (str subclass)",
            "STACK_GLOBAL requires str",
            lambda m, w: call(call(g("torch", "device"), s("os")) + call(g("torch", "device"), s("system"))
                              + STACK_GLOBAL, s(_touch(m)))),
    Payload("dunder_globals", "collections.OrderedDict.__init__.__globals__ route to builtins", "__",
            lambda m, w: sg("collections", "OrderedDict.__init__.__globals__")),
]


def hostile_pickle(payload: Payload, marker: Path, workdir: Path) -> bytes:
    """A full checkpoint pickle: real weights plus the payload hidden in `config`."""
    return pkl(d((s("weight"), benign_weights()),
                 (s("config"), d((s("sr"), i(32000)), (s("hook"), payload.build(marker, workdir))))))


def write_hostile(payload: Payload, workdir: Path, *, headered: bool) -> tuple[Path, Path]:
    """(checkpoint path, marker path) for one payload in a PK or '05' container."""
    marker = workdir / f"MARKER_{payload.name}_{'05' if headered else 'PK'}"
    path = workdir / f"{payload.name}_{'05' if headered else 'PK'}.pth"
    path.write_bytes(rezip(hostile_pickle(payload, marker, workdir), header=b"05" if headered else b"PK"))
    return path, marker


# ---------------------------------------------------------------------------------------------
# unknown but harmless classes: must stay inert placeholders

HARMLESS_CLASSES = (("utils", "HParams"), ("pathlib", "PosixPath"), ("argparse", "Namespace"),
                    ("lightning_fabric.utilities.data", "AttributeDict"))


def placeholder_pickle(extra: bytes = b"") -> bytes:
    """weights + config as utils.HParams (NEWOBJ + BUILD), a PosixPath, a Namespace, an AttributeDict.

    `extra` adds entries (pairs of pickled key and value) to the top-level dict.
    """
    hparams = (g("utils", "HParams") + EMPTY_TUPLE + b"\x81"  # NEWOBJ
               + d((s("train"), d((s("lr"), b"G" + struct.pack(">d", 1e-4)))), (s("sr"), i(32000))) + BUILD)
    path = call(g("pathlib", "PosixPath"), s("/data/logs"), s("ckpt"))
    ns = g("argparse", "Namespace") + EMPTY_TUPLE + b"\x81" + d((s("epochs"), i(8))) + BUILD
    adict = (g("lightning_fabric.utilities.data", "AttributeDict") + EMPTY_TUPLE + b"\x81"
             + MARK + s("lr") + b"G" + struct.pack(">d", 2e-4) + SETITEMS)
    body = d((s("weight"), benign_weights()), (s("config"), hparams), (s("output_dir"), path),
             (s("args"), ns), (s("hparams"), adict))
    if extra:
        body += MARK + extra + SETITEMS
    return pkl(body)


def trust_benign_pickle() -> bytes:
    """weights + a pathlib.PosixPath: the only placeholder torch.load itself can resolve."""
    return pkl(d((s("weight"), benign_weights()),
                 (s("output_dir"), call(g("pathlib", "PosixPath"), s("/data/logs"))),
                 (s("config"), d((s("sr"), i(32000))))))


# ---------------------------------------------------------------------------------------------
# metadata attacks: each returns the file bytes; the loader must refuse with a CheckpointError

def _weights_with(t_expr: bytes) -> bytes:
    return pkl(d((s("weight"), d((s("enc_p.proj.weight"), t_expr)))))


def _patch_central(data: bytes, name_suffix: str, *, method=None, csize=None, usize=None, hoff=None) -> bytes:
    """Overwrite fields of the central-directory entry whose name ends with name_suffix."""
    raw = bytearray(data)
    eocd = raw.rfind(b"PK\x05\x06")
    cd_size, cd_off = struct.unpack_from("<II", raw, eocd + 12)
    pos = cd_off
    while pos < cd_off + cd_size:
        nlen, elen, clen = struct.unpack_from("<HHH", raw, pos + 28)
        name = bytes(raw[pos + 46:pos + 46 + nlen]).decode()
        if name.endswith(name_suffix):
            if method is not None:
                struct.pack_into("<H", raw, pos + 10, method)
            if csize is not None:
                struct.pack_into("<I", raw, pos + 20, csize)
            if usize is not None:
                struct.pack_into("<I", raw, pos + 24, usize)
            if hoff is not None:
                struct.pack_into("<I", raw, pos + 42, hoff)
            return bytes(raw)
        pos += 46 + nlen + elen + clen
    raise KeyError(name_suffix)


def _nested_lists(depth: int) -> bytes:
    # EMPTY_LIST x depth then APPEND x (depth-1): iterative for the unpickler, deep for any walker
    return EMPTY_LIST * depth + APPEND * (depth - 1)


def _laughs(levels: int) -> bytes:
    """A DAG of `levels` dicts each holding the previous one twice: 2**levels paths, tiny memory."""
    out = d((s("x"), i(1))) + put(0) + b"0"  # POP: only the memo keeps the levels
    for k in range(1, levels + 1):
        out += d((s("a"), get(k - 1)), (s("b"), get(k - 1))) + put(k) + (b"0" if k < levels else b"")
    return out


def _cyclic_scaler() -> bytes:
    # {"scale": 65536.0, "growth_factor": 2.0, "me": <itself>}: what info --json would serialise
    return (EMPTY_DICT + put(0) + s("scale") + b"G" + struct.pack(">d", 65536.0) + SETITEM
            + s("growth_factor") + b"G" + struct.pack(">d", 2.0) + SETITEM + s("me") + get(0) + SETITEM)


def _cyclic_dict() -> bytes:
    # d = {}; d["self"] = d; d["list"] = [d]
    return EMPTY_DICT + put(0) + s("self") + get(0) + SETITEM + s("list") + lst(get(0)) + SETITEM


METADATA_ATTACKS: dict[str, tuple[str, object]] = {
    # name: (substring expected in the error, builder() -> file bytes)
    "offset_past_storage": ("runs past its storage",
                            lambda: rezip(_weights_with(tensor("0", 16, (4, 4), (4, 1), offset=10)))),
    "shape_past_storage": ("runs past its storage",
                           lambda: rezip(_weights_with(tensor("0", 16, (5, 4), (4, 1))))),
    "stride_past_storage": ("runs past its storage",
                            lambda: rezip(_weights_with(tensor("0", 16, (4, 4), (40, 1))))),
    "storage_numel_past_record": ("holds only",
                                  lambda: rezip(_weights_with(tensor("0", 1 << 20, (1024, 1024), (1024, 1))))),
    "negative_stride": ("negative stride", lambda: rezip(_weights_with(tensor("0", 16, (4, 4), (-4, 1), offset=12)))),
    "negative_offset": ("storage offset", lambda: rezip(_weights_with(tensor("0", 16, (4,), (1,), offset=-1)))),
    "negative_dim": ("negative dimension", lambda: rezip(_weights_with(tensor("0", 16, (-4, 4), (4, 1))))),
    "huge_shape_no_data": ("holds only",
                           lambda: rezip(_weights_with(tensor("0", 10 ** 12, (10 ** 6, 10 ** 6), (10 ** 6, 1))))),
    "huge_shape_small_storage": ("runs past its storage",
                                 lambda: rezip(_weights_with(tensor("0", 16, (10 ** 6, 10 ** 6), (10 ** 6, 1))))),
    "shape_stride_rank_mismatch": ("differ in length",
                                   lambda: rezip(_weights_with(tensor("0", 16, (4, 4), (1,))))),
    "missing_record": ("missing", lambda: rezip(_weights_with(tensor("7", 16, (4, 4), (4, 1))))),
    "record_dropped": ("missing", lambda: rezip(None, records={"data/1": None})),
    "storage_key_traversal": ("missing", lambda: rezip(_weights_with(tensor("../data/0", 16, (4, 4), (4, 1))))),
    "duplicate_record_names": ("twice", lambda: _duplicate_names()),
    "compressed_pickle": ("compressed", lambda: rezip(None, compress={"data.pkl"})),
    "compressed_tensor_record": ("compressed", lambda: rezip(None, compress={"data/0"})),
    "zip_bomb_declared_sizes": ("compressed", lambda: _patch_central(rezip(None, compress={"data/0"}), "data/0",
                                                           usize=0xFFFFFFF0)),
    "stored_size_mismatch": ("inconsistent sizes", lambda: _patch_central(rezip(None), "data/0", usize=1 << 30)),
    "record_past_eof": ("beyond the end", lambda: _patch_central(rezip(None), "data/0", csize=1 << 30,
                                                                 usize=1 << 30)),
    "header_offset_past_eof": ("beyond the end", lambda: _patch_central(rezip(None), "data/0", hoff=1 << 30)),
    "no_data_pkl": ("without data.pkl", lambda: rezip(None, records={"data.pkl": None})),
    "too_many_records": ("central directory", lambda: _eocd_records(60000)),
    "deeply_nested_lists": ("levels deep", lambda: rezip(pkl(d((s("weight"), benign_weights()),
                                                    (s("deep"), _nested_lists(200_000)))))),
    "recursive_containers": ("contains itself", lambda: rezip(pkl(d((s("weight"), benign_weights()), (s("loop"), _cyclic_dict()))))),
    "billion_laughs_dag": ("expands to more than", lambda: rezip(pkl(d((s("weight"), benign_weights()), (s("config"), _laughs(80)))))),
    "set_of_huge_range": ("builtins.range", lambda: rezip(pkl(d((s("weight"), benign_weights()),
                                                  (s("s"), call(g("builtins", "set"),
                                                                call(g("builtins", "range"), i(10 ** 12)))))))),
    "bytearray_huge": ("bytearray", lambda: rezip(pkl(d((s("weight"), benign_weights()),
                                               (s("s"), call(g("builtins", "bytearray"), i(10 ** 12))))))),
    "pickle_huge_string_decl": ("string of 4294967280 bytes", lambda: rezip(PROTO2 + b"X" + struct.pack("<I", 0xFFFFFFF0) + b"ab")),
    "big_endian": ("big-endian", lambda: rezip(None, records={"byteorder": b"big"})),
    "memo_index_4gib": ("memo index", lambda: rezip(pkl(d((s("weight"), benign_weights()))
                                                         + b"r" + struct.pack("<I", 1 << 28)))),
    "memo_put_decimal": ("memo index", lambda: rezip(pkl(d((s("weight"), benign_weights())) + b"p268435456\n"))),
    "cyclic_scaler_state": ("contains itself", lambda: rezip(pkl(d((s("weight"), benign_weights()),
                                                                   (s("MixedPrecision"), _cyclic_scaler()))))),
    # issue 12: metadata changed after the check, extents that overflow, cost bombs
    "build_after_check_tensor": ("BUILD on a tensor", lambda: rezip(_weights_with(
        tensor("0", 16, (4, 4), (4, 1)) + t(NONE, d((s("shape"), t(i(1 << 20))))) + BUILD))),
    "build_after_check_storage": ("BUILD on a storage", lambda: rezip(_weights_with(call(
        g("torch._utils", "_rebuild_tensor_v2"),
        t(s("storage"), g("torch", "FloatStorage"), s("0"), s("cpu"), i(16)) + BINPERSID
        + t(NONE, d((s("numel"), i(1 << 30)))) + BUILD, i(0), t(i(4), i(4)), t(i(4), i(1)), NEWFALSE,
        call(g("collections", "OrderedDict")))))),
    "build_on_ordered_dict": ("OrderedDict with attributes", lambda: rezip(pkl(d(
        (s("weight"), benign_weights()), (s("c"), call(g("collections", "OrderedDict")) + d((s("x"), i(1))) + BUILD))))),
    "size_one_huge_stride": ("absurd", lambda: rezip(_weights_with(tensor("0", 16, (1,), (1 << 62,))))),
    "offset_2_63": ("absurd", lambda: rezip(_weights_with(tensor("0", 16, (1,), (1,), offset=1 << 63)))),
    "empty_tensor_huge_dims": ("absurd", lambda: rezip(_weights_with(tensor("0", 16, (0, 1 << 40, 1 << 40),
                                                                             (1, 1, 1))))),
    "expanded_terabytes": ("repeats its storage", lambda: rezip(_weights_with(tensor("0", 16, (1 << 20, 1 << 20),
                                                                                     (0, 0))))),
    "too_many_dims": ("dimensions", lambda: rezip(_weights_with(tensor("0", 16, (1,) * 65, (1,) * 65)))),
    "huge_int": ("integer of", lambda: rezip(pkl(d((s("weight"), benign_weights()),
                                                   (s("n"), b"\x8b" + struct.pack("<i", 4000) + b"\x01" * 4000))))),
    "memo_put_underscores": ("memo index", lambda: rezip(pkl(d((s("weight"), benign_weights())) + b"p134_217_728\n"))),
    "memo_put_plus": ("memo index", lambda: rezip(pkl(d((s("weight"), benign_weights())) + b"p+134217728\n"))),
    "memo_put_space": ("memo index", lambda: rezip(pkl(d((s("weight"), benign_weights())) + b"p 134217728\n"))),
    "long_key": ("characters (limit", lambda: rezip(pkl(d((s("weight"), d((s("k" * 5000),
                                                                        tensor("0", 16, (4,), (1,))))))))),
    "huge_string": ("string of", lambda: rezip(PROTO2 + b"X" + struct.pack("<I", 64 << 20) + b"ab")),
}


def _duplicate_names() -> bytes:
    out = io.BytesIO()
    src = zipfile.ZipFile(io.BytesIO(template_bytes()))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(out, "w") as z:
            for name in src.namelist():
                z.writestr(zipfile.ZipInfo(name), src.read(name))
            z.writestr(zipfile.ZipInfo(src.namelist()[0]), pkl(d((s("weight"), d()))))
    return out.getvalue()


def _eocd_records(n: int) -> bytes:
    """An archive whose end records (classic and ZIP64 alike) declare n entries over a directory
    that holds fewer."""
    raw = bytearray(template_bytes())
    eocd = raw.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", raw, eocd + 8, n, n)
    z64 = raw.rfind(b"PK\x06\x06")
    if z64 >= 0:
        struct.pack_into("<QQ", raw, z64 + 24, n, n)
    return bytes(raw)


# ---------------------------------------------------------------------------------------------
# running the real CLI in a separate process

_BATCH_RUNNER = r"""
import contextlib, io, json, sys
from gsvinspect.cli.main import main
jobs = json.load(sys.stdin)
results = []
for argv in jobs:
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            rc = main(argv)
        except SystemExit as exc:
            rc = exc.code
        except BaseException as exc:
            rc = "escaped: %s: %s" % (type(exc).__name__, exc)
    results.append([rc, err.getvalue(), out.getvalue()[-2000:]])
sys.__stdout__.write(json.dumps(results))
"""


def run_cli_batch(argvs: list[list[str]], *, cwd: Path, env: dict | None = None, timeout: float = 300):
    """Run many `gsvinspect` command lines in ONE child process (cli.main each time).

    Returns [(exit code, stderr, stdout tail)]. A separate process keeps payloads (were any to
    run) and crashes away from pytest; one process for all keeps the suite fast.
    """
    import json
    import subprocess

    proc = subprocess.run([sys.executable, "-c", _BATCH_RUNNER], input=json.dumps(argvs), capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"batch runner died ({proc.returncode}): {proc.stderr[-2000:]}")
    return [tuple(r) for r in json.loads(proc.stdout)]


def hostile_env(workdir: Path) -> dict:
    """Environment under which webbrowser/antigravity payloads would create their marker."""
    import os

    env = dict(os.environ)
    env["BROWSER"] = f"touch {workdir / 'MARKER_browser'} %s"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[1]),
                                                    env.get("PYTHONPATH", "")) if p)
    return env


def run_cli_measured(argv: list[str], *, cwd: Path, timeout: float = 300) -> tuple[int, str, str, float]:
    """Run `gsvinspect ARGV` in a child process; (exit code, stdout, stderr, own peak RSS in MiB)."""
    import subprocess

    proc = subprocess.run([sys.executable, "-c", _proc.PEAK_PRELUDE + _proc.gsvinspect_code(*argv)],
                          capture_output=True, text=True, cwd=cwd, timeout=timeout)
    err, peak = _proc.split_peak(proc.stderr)
    return proc.returncode, proc.stdout, err, peak


# ---------------------------------------------------------------------------------------------
# cost attacks: many keys, long names

def many_keys_pickle(n: int) -> bytes:
    """A state dict of `n` one-element tensors, all views of the template's storage "0" (16 floats):
    the pickle torch.save writes for n keys, minus the n storage records."""
    rebuild = g("torch._utils", "_rebuild_tensor_v2") + put(2)
    pid = (MARK + s("storage") + g("torch", "FloatStorage") + s("0") + s("cpu") + i(16) + TUPLE + put(4)
           + BINPERSID + put(5))
    first = rebuild + MARK + pid + i(0) + i(1) + b"\x85" + i(1) + b"\x85" + NEWFALSE + get(0) + EMPTY_TUPLE + REDUCE + TUPLE + REDUCE
    tails = [i(k % 16) + i(1) + b"\x85" + i(1) + b"\x85" + NEWFALSE + get(0) + EMPTY_TUPLE + REDUCE + TUPLE + REDUCE
             for k in range(16)]
    head = get(2) + MARK + get(5)
    keys = (s(f"enc_p.layers.{k}.w") for k in range(1, n))
    body = b"".join(key + head + tails[k % 16] for k, key in enumerate(keys, 1))
    return (PROTO2 + EMPTY_DICT + s("weight") + g("collections", "OrderedDict") + put(0) + EMPTY_TUPLE + REDUCE
            + put(1) + MARK + s("enc_p.layers.0.w") + first + body + SETITEMS + SETITEM + STOP)


def many_keys_file(n: int) -> bytes:
    return rezip(many_keys_pickle(n))


# ---------------------------------------------------------------------------------------------
# inputs that crashed the interpreter or ended in "internal error": run only in child processes

def _tuple_key(depth: int) -> bytes:
    return EMPTY_DICT + NONE + b"\x85" * depth + i(1) + SETITEM


def _deep_hparams(depth: int) -> bytes:
    """HParams(sub=HParams(sub=...)) `depth` deep, each NEWOBJ + BUILD, as a flat run of opcodes."""
    level = get(0) + EMPTY_TUPLE + b"\x81" + EMPTY_DICT + s("sub")   # [hp, state, "sub"]
    return g("utils", "HParams") + put(0) + b"0" + level * depth + NONE + (SETITEM + BUILD) * depth


def _safetensors(header: bytes) -> bytes:
    return struct.pack("<Q", len(header)) + header


CRASHERS: dict[str, tuple[str, object]] = {
    "tuple_key_1m_deep": ("levels deep", lambda: rezip(pkl(d((s("weight"), benign_weights()),
                                                             (s("x"), _tuple_key(1_000_000)))))),
    "lists_1m_deep": ("levels deep", lambda: rezip(pkl(d((s("weight"), benign_weights()),
                                                         (s("x"), _nested_lists(1_000_000)))))),
    "hparams_1m_deep": ("levels deep", lambda: rezip(pkl(d((s("weight"), benign_weights()),
                                                           (s("x"), _deep_hparams(300_000)))))),
    "safetensors_deep_json": ("nested too deeply", lambda: _safetensors(b'{"__metadata__":' + b"[" * 1_000_000
                                                                        + b"]" * 1_000_000 + b"}")),
    "safetensors_unhashable_dtype": ("unknown dtype", lambda: _safetensors(
        b'{"a": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}}' + b" " * 4) + b"\0" * 4),
    "safetensors_huge_shape": ("absurd", lambda: _safetensors(
        b'{"a": {"dtype": "F32", "shape": [0, 1099511627776, 1099511627776], "data_offsets": [0, 0]}}')),
}
