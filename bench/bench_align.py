"""How long re-applying a rule list and re-aligning takes (the rules editor does it per keystroke).

Target: under 50 ms for 20,000 keys. Prints a table; not a test (timings depend on the machine).
Run: python bench/bench_align.py [--keys N] [--repeat R]
"""

from __future__ import annotations

import argparse
import statistics
import time

from gsvinspect.align.alignment import align
from gsvinspect.meta import TensorInfo
from gsvinspect.align.rules import parse_rules
from gsvinspect.align.suggest import suggest_rules

# the four rules a DDP + peft LoRA G needs; the timed re-apply uses these
RULES = """
[[rule]]
strip_prefix = "module."
[[rule]]
rename = '\\.base_model\\.model\\.'
to = '.'
[[rule]]
rename = '\\.base_layer\\.'
to = '.'
[[rule]]
drop = '\\.lora_[AB]\\.'
"""
# a fifth, pre-side rule, only for timing the parser
PRE_RULE = """[[rule]]
add_prefix = "model."
side = "pre"
"""


def key_sets(n: int) -> tuple[dict, dict]:
    """n hierarchical pretrained keys, and the same n keys as a DDP + peft wrapped LoRA G names them."""
    pre, ft = {}, {}
    i = 0
    while len(pre) < n:
        block, leaf = divmod(i, 8)
        name = f"cfm.estimator.transformer_blocks.{block}.attn.to_{'qkvo'[leaf % 4]}.{'weight' if leaf < 4 else 'bias'}"
        pre[name] = TensorInfo(name, (64, 64) if leaf < 4 else (64,), "float16")
        wrapped = "module." + name.replace("cfm.estimator", "cfm.base_model.model.estimator")
        if leaf < 4:
            wrapped = wrapped.replace(".weight", ".base_layer.weight")
        ft[wrapped] = TensorInfo(wrapped, pre[name].shape, "float32")
        i += 1
    return pre, ft


def timeit(fn, repeat: int) -> tuple[float, float, float]:
    """(median wall ms, min wall ms, min CPU ms): CPU time stays honest on a busy machine."""
    wall, cpu = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - c) * 1000)
    return statistics.median(wall), min(wall), min(cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--keys", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    pre, ft = key_sets(args.keys)
    rows = []
    rows.append(("parse rules (5 rules)", *timeit(lambda: parse_rules(RULES + PRE_RULE), args.repeat)))
    rules = parse_rules(RULES)
    rows.append((f"parse + apply + align ({len(pre)} pre / {len(ft)} ft keys)",
                 *timeit(lambda: align(pre, ft, parse_rules(RULES)), args.repeat)))
    rows.append(("align, no rules", *timeit(lambda: align(pre, ft), args.repeat)))
    al = align(pre, ft, rules)
    rows.append(("suggest_rules (one-off)", *timeit(lambda: suggest_rules(pre, ft), max(3, args.repeat // 5))))
    width = max(len(r[0]) for r in rows)
    print(f"{'step':<{width}}  median ms     min ms  min CPU ms")
    for name, med, best, cpu in rows:
        print(f"{name:<{width}}  {med:9.1f}  {best:9.1f}  {cpu:10.1f}")
    print(f"\nresult: {al.n_paired} paired, {al.counts}, rule hits {al.rule_hits}")
    target = rows[1][2]
    print(f"target < 50 ms for re-applying rules + re-aligning: {'OK' if target < 50 else 'MISSED'} "
          f"({target:.1f} ms minimum; see the wall-clock columns on a busy machine)")


if __name__ == "__main__":
    main()
