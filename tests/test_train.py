"""chexlib.train: loss, batching, resume = uninterrupted, determinism, reuse, device choice."""

import numpy as np
import pytest
import torch

from chexlib.errors import ParameterError
from chexlib.model import densenet121
from chexlib.run import RunFolder
from chexlib.train import (
    TrainConfig,
    epoch_batches,
    fit,
    masked_bce,
    positive_weights,
    select_device,
)
from support import TensorDataset, train_config


def _weights(path):
    state = torch.load(path, weights_only=True)["model_state"]
    return {k: v for k, v in state.items()}


def _train(tmp_path, name, config, **kw):
    torch.manual_seed(0)
    model = densenet121(num_classes=14, weights="none")
    return fit(model, TensorDataset(), TensorDataset(n=8, seed=1), config, tmp_path / name,
               device="cpu", progress=False, log=lambda s: None, **kw)


def test_masked_bce_ignores_masked_entries_and_matches_torch():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    masks = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    keep = masks.bool()
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[keep], targets[keep])
    assert masked_bce(logits, targets, masks).item() == pytest.approx(expected.item(), rel=1e-6)
    changed = logits.clone()
    changed[0, 2] = -50.0  # a masked entry: any value, same loss
    assert masked_bce(changed, targets, masks).item() == pytest.approx(expected.item(), rel=1e-6)
    pw = torch.tensor([2.0, 1.0, 3.0])
    full = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, pos_weight=pw)
    assert masked_bce(logits, targets, torch.ones_like(masks), pw).item() == pytest.approx(full.item())


def test_positive_weights_are_negatives_over_positives():
    targets = np.array([[1, 0], [0, 0], [0, 1], [0, 0]], float)
    masks = np.ones_like(targets)
    masks[1, 0] = 0  # an ignored negative does not count
    np.testing.assert_allclose(positive_weights(targets, masks).numpy(), [2.0, 3.0])


def test_epoch_batches_are_a_seeded_permutation():
    a = epoch_batches(10, 4, seed=3, epoch=0)
    assert sorted(i for b in a for i in b) == list(range(10))
    assert a == epoch_batches(10, 4, seed=3, epoch=0)
    assert a != epoch_batches(10, 4, seed=3, epoch=1)
    single = epoch_batches(9, 4, seed=0, epoch=0)  # 4 + 4 + 1: the lone image is dropped
    assert [len(b) for b in single] == [4, 4]


@pytest.mark.slow
def test_resumed_training_ends_with_the_same_weights(tmp_path):
    config = train_config()
    full = _train(tmp_path, "full", config)
    assert full.status == "trained" and len(full.history) == 2
    part = _train(tmp_path, "part", config, max_steps=3)  # interrupted mid-epoch 1
    assert part.status == "interrupted"
    rest = _train(tmp_path, "part", config, max_steps=4)  # interrupted again in epoch 2
    assert rest.status == "interrupted"  # resumed at step 3, stopped again at step 7
    done = _train(tmp_path, "part", config)
    assert done.status == "resumed"
    a, b = _weights(full.last_path), _weights(done.last_path)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    np.testing.assert_array_equal(full.history["val_auroc"], done.history["val_auroc"])


@pytest.mark.slow
def test_two_seeded_runs_are_identical_and_a_finished_run_is_reused(tmp_path):
    config = train_config(epochs=1)
    one, two = _train(tmp_path, "one", config), _train(tmp_path, "two", config)
    np.testing.assert_array_equal(one.history.to_numpy(), two.history.to_numpy())
    a, b = _weights(one.best_path), _weights(two.best_path)
    assert all(torch.equal(a[k], b[k]) for k in a)
    again = _train(tmp_path, "one", config)
    assert again.status == "reused"
    retrained = _train(tmp_path, "one", config, retrain=True)
    assert retrained.status == "trained"
    last = RunFolder(tmp_path / "one").last_checkpoint
    assert last.with_name(f"{last.name}.previous").is_file()  # the earlier run is kept aside


@pytest.mark.slow
def test_another_configuration_trains_afresh_and_keeps_the_old_checkpoint(tmp_path):
    _train(tmp_path, "run", train_config(epochs=1))
    other = _train(tmp_path, "run", train_config(epochs=1, lr=5e-4))
    assert other.status == "trained"
    old = torch.load(tmp_path / "run" / "checkpoint.pt.previous", weights_only=True)
    assert old["config"]["lr"] == 1e-3
    # Other training rows (a phantom of another size): not reused either.
    relabelled = _train(tmp_path, "run", train_config(epochs=1, lr=5e-4, data="other rows"))
    assert relabelled.status == "trained"


def test_select_device():
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type in {"cpu", "cuda", "mps"}
    with pytest.raises(ParameterError, match="'tpu' is unknown"):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ParameterError, match="not available"):
            select_device("cuda")


def test_config_from_params():
    from chexlib import params as P

    config = TrainConfig.from_params(P.validate({"epochs": 4, "lr": 0.01}))
    assert config.epochs == 4 and config.lr == 0.01 and config.classes[0] == "No Finding"


@pytest.mark.slow
def test_auto_weights_without_network_warns_and_still_trains(tmp_path, monkeypatch):
    from urllib.error import URLError

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # no cached ImageNet file

    def refuse(url, *args, **kwargs):
        raise URLError("test: no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    with pytest.warns(UserWarning, match="TRAINS FROM SCRATCH.*densenet121-a639ec97.pth"):
        model = densenet121(num_classes=14, weights="auto")
    assert model.weights_source.startswith("scratch")
    result = fit(model, TensorDataset(), TensorDataset(n=8, seed=1),
                 train_config(epochs=1, weights="auto"), tmp_path / "run", device="cpu",
                 progress=False, log=lambda s: None)
    assert result.status == "trained" and np.isfinite(result.history["val_auroc"]).all()


@pytest.mark.slow
def test_early_stopping_and_plateau_schedule_follow_validation_auroc(tmp_path, monkeypatch):
    import chexlib.train.loop as T

    scores = iter([0.6, 0.7, 0.65, 0.64, 0.63])
    monkeypatch.setattr(T, "_validate", lambda *a, **k: {"val_loss": 0.5, "val_auroc": next(scores)})
    tiny = TensorDataset(n=6)
    stopped = fit(densenet121(num_classes=14), tiny, tiny, train_config(epochs=5, early_stopping=2),
                  tmp_path / "es", device="cpu", progress=False, log=lambda s: None)
    assert stopped.history["epoch"].tolist() == [1, 2, 3, 4]  # best at 2, two epochs without gain
    best = torch.load(stopped.best_path, weights_only=True)
    assert best["best"]["epoch"] == 2

    scores = iter([0.6, 0.7, 0.65, 0.64, 0.63])
    monkeypatch.setattr(T, "_validate", lambda *a, **k: {"val_loss": 0.5, "val_auroc": next(scores)})
    plateau = fit(densenet121(num_classes=14), tiny, tiny,
                  train_config(epochs=5, lr_schedule="plateau"),
                  tmp_path / "lr", device="cpu", progress=False, log=lambda s: None)
    # ReduceLROnPlateau(patience=1) cuts the rate by 10 after the second epoch without gain (4).
    np.testing.assert_allclose(plateau.history["lr"], [1e-3, 1e-3, 1e-3, 1e-3, 1e-4])


def test_cosine_schedule_warms_up_then_follows_the_half_cosine(tmp_path):
    import math

    from chexlib.train.loop import cosine_factor

    # 100 steps, 5 of warm-up: 1/5 .. 5/5, then 0.5 (1 + cos(pi t)) with t = (s - 5) / 95.
    assert [cosine_factor(s, 100) for s in range(5)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    for s in (5, 30, 52, 99):
        assert cosine_factor(s, 100) == pytest.approx(0.5 * (1 + math.cos(math.pi * (s - 5) / 95)))
    # fit steps it every batch: 20 images in batches of 4 = 5 steps per epoch, 10 in all, one of
    # warm-up; the rate recorded after each epoch is the one the next step would use.
    run = _train(tmp_path, "cos", train_config(lr_schedule="cosine"))
    expected = [1e-3 * 0.5 * (1 + math.cos(math.pi * (s - 1) / 9)) for s in (5, 10)]
    np.testing.assert_allclose(run.history["lr"], expected, atol=1e-12)


@pytest.mark.slow
def test_resumed_cosine_training_ends_with_the_same_weights(tmp_path):
    config = train_config(lr_schedule="cosine")
    full = _train(tmp_path, "full", config)
    assert _train(tmp_path, "part", config, max_steps=3).status == "interrupted"
    done = _train(tmp_path, "part", config)
    assert done.status == "resumed"
    a, b = _weights(full.last_path), _weights(done.last_path)
    assert all(torch.equal(a[k], b[k]) for k in a)
