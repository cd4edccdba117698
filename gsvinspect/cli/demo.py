"""`gsvinspect demo`: write a realistic synthetic GPT-SoVITS set once, then open it in the app.

The set (gsvinspect.synth.write_demo) is a v2 SoVITS pretrained G with a DDP-prefixed G_*.pth
fine-tune (needs a `module.` rule), its SoVITS_weights export (enc_q gone), and a v2 GPT pretrained
with a Lightning checkpoint carrying GradScaler state. Without a terminal (CI, pipes) or with
--no-tui it prints a text summary instead of opening the app.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PAIRS = {
    "sovits": ("sovits_pretrained", "sovits_finetune"),
    "gpt": ("gpt_pretrained", "gpt_finetune"),
    "export": ("sovits_pretrained", "sovits_export"),
}


def cache_dir() -> Path:
    """$GSVINSPECT_CACHE/demo, else ~/.cache/gsvinspect/demo (XDG_CACHE_HOME honoured)."""
    root = os.environ.get("GSVINSPECT_CACHE")
    if root:
        return Path(root).expanduser() / "demo"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "gsvinspect" / "demo"


def add_parser(subparsers) -> None:
    from .main import COMMON
    from .open import add_app_options

    p = subparsers.add_parser(
        "demo", parents=[COMMON], help="generate a realistic demo pair and open it",
        description="Generate (once) a synthetic GPT-SoVITS v2 set in the cache directory and open a pair.")
    p.add_argument("--pair", choices=tuple(PAIRS), default="sovits",
                   help="sovits: pretrained G vs DDP G_*.pth (default); gpt: pretrained vs Lightning ckpt; "
                        "export: pretrained G vs SoVITS_weights export")
    p.add_argument("--dir", metavar="DIR", help=f"where to write the demo files (default: {cache_dir()})")
    p.add_argument("--no-tui", action="store_true", help="print a text summary instead of opening the app")
    p.add_argument("--run", dest="run_demo", action="store_true",
                   help="a whole training run instead (pretrained, Lightning ckpts, G_/D_, exports; English rows "
                        "drifting, a jump at epoch 6, NaN at epoch 8) opened in the run view")
    add_app_options(p)
    p.set_defaults(run=run)


def demo_paths(directory: Path) -> dict[str, Path]:
    from ..errors import UsageError
    from ..synth import write_demo

    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the demo directory {directory}: {exc}") from None
    return write_demo(directory)


def summary(paths: dict[str, Path], pair: str, out=None) -> None:
    """What the app would show first, as text: files, counts, suggested rules, findings."""
    from ..align.alignment import align
    from ..load.checkpoint import open_checkpoint
    from ..align.knowledge import diagnose
    from ..align.rules import RuleSet
    from ..align.suggest import suggest_rules

    out = out or sys.stdout
    w = out.write
    w(f"gsvinspect demo files in {_common_root(paths)}\n")
    for name in (pair, *[p for p in PAIRS if p != pair]):
        pre_name, ft_name = PAIRS[name]
        pre, ft = open_checkpoint(paths[pre_name]), open_checkpoint(paths[ft_name])
        try:
            w(f"\n== pair {name}{' (selected)' if name == pair else ''}\n")
            for label, ck in (("pretrained", pre), ("fine-tuned", ft)):
                layout = getattr(ck.layout, "value", ck.layout)
                scaler = f"scaler under {'.'.join(ck.scaler.path)}" if ck.scaler is not None else "no scaler state"
                w(f"  {label:10}  {ck.path.name}: {layout} {ck.version}, {len(ck.weights)} tensors, {scaler}\n")
            al = align(pre.weights, ft.weights, RuleSet())
            w("  keys: " + _counts(al) + "\n")
            if not al.ok:
                rules = suggest_rules(list(pre.weights), list(ft.weights))
                if len(rules):
                    al2 = align(pre.weights, ft.weights, rules)
                    w(f"  suggested rules ({', '.join(r.describe() for r in rules.rules)}): {_counts(al2)}\n")
                    al = al2
            for f in diagnose(pre, ft, al):
                w(f"  {f.severity.upper():7} [{f.code}] {f.message}\n")
            w(f"  open it: gsvinspect demo --pair {name}   "
              f"(or gsvinspect {paths[pre_name]} {paths[ft_name]})\n")
        finally:
            pre.close()
            ft.close()


def _common_root(paths: dict[str, Path]) -> Path:
    return Path(os.path.commonpath([str(p) for p in paths.values()]))


def _counts(al) -> str:
    """The counts as `diff`'s headline reads them: a dtype-only pair is matched (GPT-SoVITS casts on
    load), with how many differ only in dtype; zero counts left out."""
    from ..report.diff import headline_counts

    parts = []
    for label, value in headline_counts(al):       # ("matched", "776 (776 differ only in dtype)")
        n, _, rest = value.partition(" ")
        if n != "0":
            parts.append(f"{n} {label}" + (f" {rest}" if rest else ""))
    return ", ".join(parts) or "no keys"


def run_tree(directory: Path) -> Path:
    """The run demo under `directory`/run (written once; a complete earlier tree is reused)."""
    import json

    from ..errors import UsageError
    from ..synth import write_run

    root = directory / "run"
    marker = root / "gsvinspect-run.json"
    if marker.is_file():
        try:
            json.loads(marker.read_text())
            return root
        except (ValueError, OSError):
            pass
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the demo directory {root}: {exc}") from None
    write_run(root, "v2", epochs=(2, 4, 6, 8), scale=16, jump_at=6, nan_at=8)
    return root


def run(args) -> int:
    directory = Path(args.dir).expanduser() if args.dir else cache_dir()
    if args.run_demo:
        return _run_demo(args, run_tree(directory))
    paths = demo_paths(directory)
    from .open import can_run_app

    if args.no_tui or not can_run_app():
        summary(paths, args.pair)
        return 0
    from gsvinspect_tui import run_app

    pairs = {name: (paths[a], paths[b], None) for name, (a, b) in PAIRS.items()}
    pre, ft, _ = pairs[args.pair]
    return run_app(pre, ft, rules=args.rules, device=args.device, trust=args.trust, mouse=not args.no_mouse,
                   stats=not args.no_stats, pairs=pairs, pair=args.pair)


def _run_demo(args, root: Path) -> int:
    from .open import can_run_app

    if args.no_tui or not can_run_app():
        from .scan import run as scan_run

        print(f"gsvinspect run demo in {root}  (open it: gsvinspect {root})")
        import argparse

        scan_run(argparse.Namespace(paths=[str(root)], drift=True, json=False, markdown=False, csv=False,
                                    trust=False, no_cache=False))
        return 0    # the demo's NaN and jump are planted: finding them is success
    from gsvinspect_tui import run_app

    return run_app(root, None, rules=args.rules, device=args.device, trust=args.trust, mouse=not args.no_mouse,
                   stats=not args.no_stats)
