"""Pure-data descriptions shared by every module: tensor metadata, layouts, versions.

No torch, no numpy: these are what listing, aligning and rendering work on.
"""

from __future__ import annotations

from enum import Enum
from math import prod
from typing import NamedTuple

# bytes per element for the dtypes a checkpoint can hold (torch names)
DTYPE_SIZES: dict[str, int] = {
    "float64": 8, "float32": 4, "float16": 2, "bfloat16": 2,
    "int64": 8, "int32": 4, "int16": 2, "int8": 1, "uint8": 1, "bool": 1,
    "complex64": 8, "complex128": 16,
    "float8_e4m3fn": 1, "float8_e5m2": 1, "uint16": 2, "uint32": 4, "uint64": 8,
}

FLOAT_DTYPES = frozenset({"float64", "float32", "float16", "bfloat16"})

# short names for display
DTYPE_SHORT: dict[str, str] = {
    "float64": "f64", "float32": "f32", "float16": "f16", "bfloat16": "bf16",
    "int64": "i64", "int32": "i32", "int16": "i16", "int8": "i8", "uint8": "u8", "bool": "bool",
}


class TensorInfo(NamedTuple):
    """Metadata of one tensor as stored: enough to list, align and plan without reading data.

    A named tuple rather than a frozen dataclass: a 20,000-key file builds 20,000 of these at
    open, and tuple construction is several times cheaper.
    """

    key: str
    shape: tuple[int, ...]
    dtype: str  # torch dtype name without the "torch." prefix, e.g. "float16"

    @property
    def numel(self) -> int:
        return prod(self.shape) if self.shape else 1

    @property
    def nbytes(self) -> int:
        return self.numel * DTYPE_SIZES.get(self.dtype, 0)

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES


class Layout(str, Enum):
    """Which GPT-SoVITS file kind a checkpoint is (FORMATS.md §1)."""

    GPT_PRETRAINED = "gpt-pretrained"          # {weight, config(, info)}, model.* keys, fp16
    GPT_LIGHTNING = "gpt-lightning"            # Lightning training ckpt, state_dict + loops...
    GPT_WEIGHTS = "gpt-weights"                # GPT_weights*/ export {weight, config, info}
    SOVITS_G_PRETRAINED = "sovits-g-pretrained"  # s2G*.pth {weight, config, info}, enc_q kept
    SOVITS_D_PRETRAINED = "sovits-d-pretrained"  # s2D*.pth {weight, config}
    SOVITS_G_TRAIN = "sovits-g-train"          # logs_s2*/G_*.pth {model, iteration, optimizer, learning_rate}
    SOVITS_D_TRAIN = "sovits-d-train"          # logs_s2*/D_*.pth
    SOVITS_G_LORA_TRAIN = "sovits-g-lora-train"  # logs_s2_v*_lora_r/G_*.pth (peft keys)
    SOVITS_WEIGHTS = "sovits-weights"          # SoVITS_weights*/ export, enc_q dropped
    SOVITS_WEIGHTS_LORA = "sovits-weights-lora"  # headered 03/04 LoRA export with lora_rank
    VOCODER = "vocoder"                        # v4 vocoder.pth, bare state dict
    SAFETENSORS = "safetensors"
    STATE_DICT = "state-dict"                  # bare state dict of unknown model
    UNKNOWN = "unknown"                        # some dict holding tensors

    @property
    def is_gpt(self) -> bool:
        return self.value.startswith("gpt-")

    @property
    def is_sovits(self) -> bool:
        return self.value.startswith("sovits-")


VERSIONS = ("v1", "v2", "v3", "v4", "v2Pro", "v2ProPlus")
UNKNOWN_VERSION = "unknown"


def fmt_shape(shape) -> str:
    """The one shape format every view prints: ``48×192×1``; ``scalar`` for a 0-d tensor, ``-`` for none."""
    if shape is None:
        return "-"
    return "×".join(str(d) for d in shape) or "scalar"
