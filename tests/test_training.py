import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import helpers
from helpers import data, models
from helpers.training import best_path


def blobs(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randn(n, 2, generator=g) * 0.5 + torch.tensor([[0.0, 3.0], [3.0, 0.0], [-3.0, -3.0]])[y]
    return TensorDataset(x, y)


def loaders():
    return (data.loader(blobs(seed=0), 32, shuffle=True, seed=0, device="cpu"),
            data.loader(blobs(seed=1), 64, device="cpu"))


def make_model():
    helpers.seed_everything(0)
    return models.MLP((2, 16, 3), "relu")


def test_fit_learns_and_records_history():
    train, val = loaders()
    model = make_model()
    history = helpers.fit(model, train, val, epochs=5, optimizer=torch.optim.Adam(model.parameters(), 0.05))
    assert history.epochs == [1, 2, 3, 4, 5] and len(history.val_acc) == 5
    assert history.val_acc[-1] > 0.95 and history.train_loss[-1] < history.train_loss[0]
    assert helpers.evaluate(model, val)["acc"] == pytest.approx(history.best("val_acc"))


def test_early_stopping_stops_and_restores_best():
    train, val = loaders()
    model = make_model()
    # lr 0 after epoch 1: nothing improves, so patience 2 stops at epoch 3
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 0.0)
    history = helpers.fit(model, train, val, epochs=20, optimizer=opt, scheduler=sched,
                          early_stopping=helpers.EarlyStopping("val_loss", patience=2))
    assert history.stopped_early and history.epochs == [1, 2, 3] and history.best_epoch == 1


def test_early_stopping_reference_moves_on_every_improvement():
    stopper = helpers.EarlyStopping("val_loss", patience=2)
    flags = [stopper.improved(v) for v in [1.0, 0.8, 0.9, 0.7, 0.75, 0.72]]
    assert flags == [True, True, False, True, False, False] and stopper.should_stop
    acc = helpers.EarlyStopping("val_acc", patience=1)
    assert acc.improved(0.5) and acc.improved(0.6) and not acc.improved(0.55)
    with pytest.raises(ValueError, match="Cannot monitor"):
        helpers.EarlyStopping("accuracy")


def test_resume_after_a_killed_run_matches_an_uninterrupted_run(tmp_path):
    train, val = loaders()
    reference = make_model()
    ref_hist = helpers.fit(reference, train, val, epochs=4, restore_best=False,
                           optimizer=torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9))

    class Killed(Exception):
        pass

    def kill_after_epoch_2(epoch, model, history):
        if epoch == 2:
            raise Killed

    ckpt = tmp_path / "run.pt"
    train, val = loaders()
    model = make_model()
    with pytest.raises(Killed):
        helpers.fit(model, train, val, epochs=4, checkpoint=ckpt, callbacks=[kill_after_epoch_2],
                    optimizer=torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9))
    assert ckpt.exists() and best_path(ckpt).exists()
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temporary files behind
    # a fresh kernel: new model and optimizer objects, same checkpoint path
    model = make_model()
    history = helpers.fit(model, train, val, epochs=4, checkpoint=ckpt, restore_best=False,
                          optimizer=torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9))
    assert history.epochs == [1, 2, 3, 4]
    # the data order differs after resuming (a new shuffling generator), so compare loosely
    assert history.val_acc[-1] == pytest.approx(ref_hist.val_acc[-1], abs=0.05)
    # loading the best weights works with weights_only=True
    helpers.training.load_weights(make_model(), best_path(ckpt))


def test_finished_run_is_loaded_not_retrained(tmp_path, capsys):
    train, val = loaders()
    model = make_model()
    ckpt = tmp_path / "done.pt"
    helpers.fit(model, train, val, epochs=2, checkpoint=ckpt, optimizer=torch.optim.Adam(model.parameters()))
    again = make_model()
    calls = []
    history = helpers.fit(again, train, val, epochs=2, checkpoint=ckpt, callbacks=[lambda *a: calls.append(a)],
                          optimizer=torch.optim.Adam(again.parameters()))
    assert calls == [] and history.epochs == [1, 2] and "resumed" in capsys.readouterr().out
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_divergence_stops_training_and_keeps_the_best_weights(capsys):
    train, val = loaders()
    model = make_model()
    history = helpers.fit(model, train, val, epochs=100, optimizer=torch.optim.SGD(model.parameters(), lr=10.0),
                          loss_fn=lambda out, y: nn.functional.nll_loss(out, y))  # unbounded below
    assert history.diverged and "diverged" in capsys.readouterr().out
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_adversary_replaces_training_batches():
    train, val = loaders()
    model = make_model()
    seen = []

    def adversary(m, x, y):
        seen.append(m.training)
        return x + 0.0

    helpers.fit(model, train, val, epochs=1, optimizer=torch.optim.Adam(model.parameters()), adversary=adversary)
    assert len(seen) == len(train)


def test_labels_out_of_range_are_a_clear_error():
    x, y = torch.randn(8, 2), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    bad = data.loader(TensorDataset(x, y), 8, device="cpu")
    with pytest.raises(ValueError, match="labels must lie in 0..2"):
        helpers.evaluate(make_model(), bad)


def test_wrong_input_shape_is_a_clear_error():
    with pytest.raises(ValueError, match="784 values per sample"):
        models.MLP()(torch.zeros(2, 3, 32, 32))
    with pytest.raises(ValueError, match="Unknown activation"):
        models.MLP(act="swishy")
    with pytest.raises(ValueError, match="epochs"):
        train, val = loaders()
        m = make_model()
        helpers.fit(m, train, val, epochs=0, optimizer=torch.optim.Adam(m.parameters()))


def test_evaluate_and_predict_restore_each_modules_own_mode_even_after_an_error():
    train, val = loaders()
    model = make_model().train()
    model.net[1].eval()  # a sub-module its owner keeps in eval mode
    modes = [m.training for m in model.modules()]
    helpers.evaluate(model, val)
    helpers.predict(model, val)
    assert [m.training for m in model.modules()] == modes
    bad = data.loader(TensorDataset(torch.randn(4, 5), torch.zeros(4, dtype=torch.long)), 4, device="cpu")
    for function in (helpers.evaluate, helpers.predict):
        with pytest.raises(ValueError, match="values per sample"):
            function(model, bad)
        assert [m.training for m in model.modules()] == modes
