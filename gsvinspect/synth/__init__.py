"""Realistic synthetic GPT-SoVITS checkpoints, written exactly in the containers upstream writes.

Why: tests, benchmarks and the demo need every file kind of FORMATS.md (pretrained, Lightning,
G_/D_ training ckpts, headered SoVITS exports, LoRA, vocoder, safetensors) without shipping
gigabytes of real weights. Key names, order and shapes come from the manifests
(gsvinspect.load.manifest), so detection sees what it would see on real files.

API (torch is imported lazily inside each function):

``state_dict(model, version, *, scale=1, seed=0, dtype="float32", rank=32, materialize=True)``
    OrderedDict[str, Tensor] for model in {"gpt", "sovits-G", "sovits-D", "sovits-G-lora",
    "vocoder"}. scale=1 gives the exact manifest shapes; scale=k>1 divides every dim >= 64 by k
    (rounded up, min 8) except the phoneme-embedding rows (GPT 512/732, SoVITS 322/732) and LoRA
    ranks; small dims (kernel sizes, 1-sized axes) never change, so v2Pro/v2ProPlus, v1/v2 still
    differ. Values are seeded per key (seed, key): the same key gets the same values in every
    model that has it (a LoRA ckpt's base_layer weights equal the plain G's weights).
    materialize=False returns meta tensors (shapes/dtypes only, no memory).
``planned_shapes(model, version, *, scale=1, rank=32)``
    OrderedDict[key, shape] without torch.
``fine_tune(sd, *, seed=1, strength=0.01, module_strength=None, rows=None, row_strength=None,
            rename_prefix=None, change_shape=None, nan_key=None)``
    a fine-tuned partner: each float tensor moves by randn * strength * rms(tensor); the longest
    matching prefix in module_strength overrides strength; `rows` limits the phoneme-embedding
    change to those rows (the others then move by the key's strength only if row_strength is set,
    in which case `rows` move by row_strength).
``write_checkpoint(path, layout, version, *, weights=None, scale=1, seed=0, dtype=None, ...)``
    one file in the exact container of `layout` (a gsvinspect.meta.Layout); returns the Path.
``write_pair(dir, kind, version, *, scale=8, seed=0)``
    (pretrained_path, finetuned_path) for kind in PAIR_KINDS.
``write_demo(dir)``
    the demo set (dict name -> Path); idempotent.
``wide_state_dict(n_keys=20000, seed=0)``
    many small tensors with hierarchical names, for TUI/bench scale tests.

Helpers: ``layout_versions(layout)`` (versions a layout exists for), ``default_dtype(layout)``,
``write_safetensors(path, tensors)`` (the format written by hand, no safetensors package),
``symbol_rows(version, languages)`` (phoneme rows of e.g. "en"), ``cast(sd, dtype)``,
``HParams`` (pickled as upstream's ``utils.HParams`` by a private pickler: no ``utils`` module is
ever put into sys.modules, so reading such a file back needs a stub or a restricted unpickler).

Containers follow FORMATS.md: pretrained files are torch.save'd under their own name (inner zip
folder = file stem), my_save-style files (GPT_weights, G_/D_*.pth, v1/v2/v3 SoVITS exports) under
a seed-derived float timestamp folder, Lightning ckpts and headered exports from a BytesIO
("archive/"), with the 2-byte header written over "PK" for 03/04/05/06.

The package: ``weights`` (shapes, values, fine-tuning), ``containers`` (configs, HParams, low-level
writers), ``trainer`` (optimizer/Lightning/scaler state), ``layouts`` (write_checkpoint), ``pairs``
(write_pair, the demo), ``run`` (whole training-run trees for ``scan``). Every name is re-exported
here, so ``from gsvinspect import synth; synth.write_checkpoint(...)`` keeps working.

May import: every library stage before it (load, align, stats, export, report) and the foundation.
Never cli or Textual.
"""

from __future__ import annotations

from .weights import (  # noqa: F401
    MIN_SCALED_DIM, PHONEME_TABLES, SCALE_FROM_DIM, _canonical_key, cast, fine_tune, planned_entries,
    planned_shapes, scaled_dim, state_dict, wide_state_dict,
)
from .containers import (  # noqa: F401
    HPARAMS_GLOBAL, HParams, SAFETENSORS_DTYPES, _timestamp_archive, gpt_config, gpt_export_config,
    sovits_config, v1_pretrained_config, write_safetensors,
)
from .trainer import (  # noqa: F401
    callback_key, grad_scaler_state,
)
from .layouts import (  # noqa: F401
    HEADERS, LORA_HEADERS, SCALER_KEYS, _LAYOUT_DTYPE, _LAYOUT_MODEL, _LAYOUT_VERSIONS, default_dtype,
    layout_versions, write_checkpoint,
)
from .pairs import (  # noqa: F401
    DEMO_FILES, DEMO_MARKER, DEMO_SCALE, PAIR_KINDS, _PRETRAINED_NAMES, _loaded_from_fp16,
    pretrained_relpath, symbol_rows, write_demo, write_pair,
)
from .run import NAN_KEYS, STEPS_PER_EPOCH, RunTree, write_run  # noqa: F401
