"""chexlib.progress: text bars under papermill (the runner's setting), tqdm.auto otherwise."""

import tqdm.auto
import tqdm.std

from chexlib.progress import PROGRESS_ENV, progress_bar


def test_text_bars_when_the_runner_asks(monkeypatch, capsys):
    monkeypatch.setenv(PROGRESS_ENV, "text")
    bar = progress_bar(range(3), desc="work", mininterval=0)
    assert type(bar) is tqdm.std.tqdm
    assert list(bar) == [0, 1, 2]
    assert "work: 100%" in capsys.readouterr().err


def test_auto_bars_otherwise(monkeypatch):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    bar = progress_bar(range(2), disable=True)
    assert isinstance(bar, tqdm.auto.tqdm)
