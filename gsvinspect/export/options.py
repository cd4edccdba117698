"""The export command's choices, apart from the exporter so building the CLI parser stays cheap."""

LAYOUT_CHOICES = ("pretrained", "gpt-weights", "sovits-weights", "same")
LAYOUT_ALIASES = {"base": "pretrained", "repair": "same", "gpt-pretrained": "pretrained",
                  "sovits-g-pretrained": "pretrained", "sovits-d-pretrained": "pretrained",
                  "sovits-weights-lora": "sovits-weights"}
DTYPE_CHOICES = ("keep", "half", "float")
MISSING_CHOICES = ("pretrained", "error")
CONFIG_CHOICES = ("plain", "keep")
