"""Progress bars that render both in JupyterLab and in papermill's logs.

In JupyterLab ``tqdm.auto`` draws a widget. A notebook run by papermill has no one watching the
widget, and papermill's ``--log-output`` only shows text streams, so the runner sets
``CHEXLIB_PROGRESS=text`` for its kernels and the bars are then written as text (to stderr, at
most every few seconds) where the log shows them.
"""

from __future__ import annotations

import os

#: Environment variable: ``text`` forces plain-text bars (set by :mod:`chexlib.runner`).
PROGRESS_ENV = "CHEXLIB_PROGRESS"


def progress_bar(iterable=None, **kwargs):
    """A tqdm progress bar: a widget in Jupyter, text in terminals and papermill logs."""
    if os.environ.get(PROGRESS_ENV) == "text":
        from tqdm.std import tqdm

        kwargs.setdefault("mininterval", 10)
        kwargs.setdefault("ascii", True)
    else:
        from tqdm.auto import tqdm
    return tqdm(iterable, **kwargs)
