"""--amp-dtype from the flag to the engine: the GradScaler scales for float16 only, train_one_epoch
autocasts to the type asked for, a checkpoint resumes with another type, and a type the device
cannot run is one line before any work. CUDA is mocked where a scaler's state is concerned."""

import pytest
import torch
from test_arguments import cli

import engine
import tv_training
from finetune.run import checkpoints, optim, settings


@pytest.fixture
def cuda_present(monkeypatch):
    """A CUDA GradScaler stays enabled only where CUDA is (it lazily makes its tensors later)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


def test_grad_scaler_scales_for_float16_only(cuda_present):
    assert optim.make_grad_scaler("cuda", False, torch.float16) is None
    assert optim.make_grad_scaler("cuda", True, torch.float16).is_enabled()
    assert not optim.make_grad_scaler("cuda", True, torch.bfloat16).is_enabled()
    assert optim.make_grad_scaler("cuda", True).is_enabled()  # no type given: the engine's float16 on CUDA
    assert not optim.make_grad_scaler("cpu", True, torch.bfloat16).is_enabled()


class AutocastRecorder(torch.nn.Module):
    """Two loss terms from a linear layer; records the type its output comes out in under autocast."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 2)
        self.dtypes = []

    def forward(self, images, targets=None):
        y = self.linear(torch.stack([img.mean(dim=(1, 2)) for img in images]))
        self.dtypes.append(y.dtype)
        return {"loss_a": (y.float() ** 2).mean(), "loss_b": y.float().abs().mean()}


@pytest.mark.parametrize("amp_dtype, expected", [(None, torch.bfloat16), (torch.bfloat16, torch.bfloat16),
                                                 (torch.float16, torch.float16)])
def test_train_one_epoch_autocasts_to_the_type_asked_for(amp_dtype, expected, capsys):
    """None keeps the reference's choice (the CPU: bfloat16); the scaler still switches autocast on."""
    torch.manual_seed(0)
    model = AutocastRecorder()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    batches = [([torch.rand(3, 8, 8), torch.rand(3, 8, 8)], [{}, {}]) for _ in range(3)]
    scaler = optim.make_grad_scaler("cpu", True, amp_dtype)
    engine.train_one_epoch(model, optimizer, batches, "cpu", 1, 10, scaler, amp_dtype=amp_dtype)
    assert model.dtypes == [expected] * 3
    engine.train_one_epoch(model, optimizer, batches, "cpu", 1, 10, None, amp_dtype=amp_dtype)  # no --amp
    assert model.dtypes[3:] == [torch.float32] * 3
    capsys.readouterr()


def test_a_checkpoint_resumes_with_the_other_type(cuda_present):
    """float16's scaler state goes to a float16 run only (a bfloat16 run has no scaler to give it to);
    a bfloat16 run's (an empty state) starts a float16 run's scaler afresh."""
    model = AutocastRecorder()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    lr_scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
    float16 = optim.make_grad_scaler("cuda", True, torch.float16)
    float16.load_state_dict(dict(float16.state_dict(), scale=1024.0))
    checkpoint = dict(optimizer=optimizer.state_dict(), lr_scheduler=lr_scheduler.state_dict(), epoch=0, records=[])
    for saved_with, resumed_with, scale in ((torch.float16, torch.float16, 1024.0),
                                            (torch.float16, torch.bfloat16, None),
                                            (torch.bfloat16, torch.float16, 2.0 ** 16)):
        saver = float16 if saved_with == torch.float16 else optim.make_grad_scaler("cuda", True, saved_with)
        checkpoint["scaler"] = saver.state_dict()
        scaler = optim.make_grad_scaler("cuda", True, resumed_with)
        assert checkpoints.restore_training_state(checkpoint, optimizer, lr_scheduler, scaler)[0] == 1
        assert (scaler.get_scale() if scaler.is_enabled() else None) == scale


def test_resume_takes_the_checkpoints_amp_dtype_unless_typed():
    """Another GPU may need another type: a typed --amp-dtype wins without an error."""
    parser = tv_training.get_args_parser()
    checkpoint = {"args": {"amp_dtype": "float16", "tensorboard": True}}
    taken = settings.take_recipe(parser.parse_args([]), checkpoint, "ckpt.pth")
    assert (taken.amp_dtype, taken.tensorboard) == ("float16", True)
    typed = settings.take_recipe(parser.parse_args(["--amp-dtype", "bfloat16", "--no-tensorboard"]), checkpoint,
                                 "ckpt.pth")
    assert (typed.amp_dtype, typed.tensorboard) == ("bfloat16", False)


def test_float16_on_the_cpu_is_one_line_before_any_work(tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = cli(["--demo", "--data-path", str(tmp_path / "data"), "--output-dir", str(out), "--device",
                             "cpu", "--amp", "--amp-dtype", "float16"], capsys)
    assert code == 1
    assert err.strip().splitlines() == ["error: --amp-dtype float16: for CUDA GPUs only; --amp on cpu trains in "
                                        "bfloat16 (no GradScaler needed): drop --amp-dtype or pass --amp-dtype "
                                        "bfloat16."]
    assert not (tmp_path / "data").exists() and "Start training" not in stdout
