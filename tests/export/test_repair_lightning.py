"""Issue 14, point 5: a repaired Lightning checkpoint is resumed by a real `pytorch_lightning.Trainer`.

The checkpoint is written by Lightning itself (fp16 AMP GradScaler state under `MixedPrecision`, a
`pathlib.PosixPath` in `hyper_parameters`, as GPT-SoVITS's s1 training writes). With torch >= 2.6
resuming it fails ("Unsupported global ... PosixPath"); after `gsvinspect repair` it resumes, the
GradScaler state is restored exactly and training continues from the saved step.
"""

from __future__ import annotations

import logging
import pathlib
import warnings

import pytest
import torch

pl = pytest.importorskip("pytorch_lightning")
from pytorch_lightning.plugins.precision import MixedPrecision  # noqa: E402

from gsvinspect.cli.main import main  # noqa: E402


class Tiny(pl.LightningModule):
    def __init__(self, output_dir: pathlib.Path | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Linear(4, 2)
        self.seen_scaler: dict | None = None

    def training_step(self, batch, i):
        return self.net(batch[0]).pow(2).mean()

    def on_train_start(self):  # after the checkpoint was restored, before any step changes it
        self.seen_scaler = dict(self.trainer.precision_plugin.scaler.state_dict())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _trainer(root, epochs: int, scaler) -> pl.Trainer:
    return pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=root,
                      plugins=[MixedPrecision("16-mixed", "cpu", scaler)])


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 4, generator=g)), batch_size=4)


@pytest.fixture(autouse=True)
def quiet():
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def test_repaired_lightning_checkpoint_resumes_with_its_scaler(tmp_path, capsys):
    t = _trainer(tmp_path, 1, torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=7))
    t.fit(Tiny(output_dir=tmp_path / "logs_s1_v2"), _data())
    ckpt = tmp_path / "epoch=0-step=2.ckpt"
    t.save_checkpoint(ckpt)
    saved = torch.load(ckpt, weights_only=False)
    assert isinstance(saved["hyper_parameters"]["output_dir"], pathlib.PurePath)
    scaler_state = saved["MixedPrecision"]
    assert scaler_state["growth_interval"] == 7 and scaler_state["_growth_tracker"] > 0

    # as users see it: resuming the original fails under torch's weights_only default
    with pytest.raises(Exception, match="PosixPath"):
        _trainer(tmp_path, 2, torch.amp.GradScaler("cpu")).fit(Tiny(), _data(), ckpt_path=ckpt)

    fixed = tmp_path / "fixed.ckpt"
    assert main(["repair", str(ckpt), "-o", str(fixed)]) == 0
    capsys.readouterr()
    model = Tiny()
    t2 = _trainer(tmp_path, 2, torch.amp.GradScaler("cpu"))  # a fresh scaler: defaults, not the saved ones
    t2.fit(model, _data(), ckpt_path=fixed)
    assert model.seen_scaler == scaler_state  # restored exactly: scale, factors, interval, tracker
    assert t2.global_step == saved["global_step"] + 2 and t2.current_epoch == 2
    # the weights it resumed from are the saved ones, bit for bit; the path is the string it stood for
    again = torch.load(fixed, weights_only=True)
    assert again["hyper_parameters"]["output_dir"] == str(saved["hyper_parameters"]["output_dir"])
    for k, v in saved["state_dict"].items():
        assert torch.equal(again["state_dict"][k], v)
    assert again["optimizer_states"][0]["param_groups"] == saved["optimizer_states"][0]["param_groups"]
