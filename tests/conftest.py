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
