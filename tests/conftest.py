"""Shared test set-up."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Run each test module's torch code on one thread.

    Tests use tiny batches that gain nothing from threads, and on a shared 2-core machine two
    OpenMP threads can make a DenseNet forward pass 50x slower. Module scope: set before a
    module's other module-scoped fixtures (e.g. a trained model) run; restored afterwards.
    Subprocesses (the papermill smoke run) are not affected.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TINY_SIZE = 48


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A phantom with 12 reported images and a demo run folder (random-weight checkpoint at
    48 px, made-up predictions, thresholds 0.5, outcomes): :func:`chexlib.demo.make_demo_run`.

    Returns (data root, run folder, probabilities [12, 14], outcomes [12, 14]).
    """
    from chexlib.demo import make_demo_run

    root, run_dir = tmp_path_factory.mktemp("phantom"), tmp_path_factory.mktemp("run")
    probs, outcomes = make_demo_run(root, run_dir, n_valid=12, image_size=TINY_SIZE)
    return root, run_dir, probs, outcomes
