"""How the notebooks show tables and warnings: readable in JupyterLab, one format per column.

:func:`readable_output` is called once in a notebook's setup cell. Tables show their text
columns whole (the LRP composites' "rules per layer" is the lesson, not something to cut with
"...") and floats in one plain format (no switch to scientific notation inside a column).
Warnings print once each, as one short line on standard output, not as a red block that reads
like a traceback. :func:`with_display_names` shows a table's method names as a reader knows them
(the saved CSVs keep the registry's names, which code reads back).
"""

from __future__ import annotations

import textwrap
import warnings

import pandas as pd

from chexlib.display_names import display_name

__all__ = ["FLOAT_FORMAT", "format_warning", "readable_output", "show_warning",
           "with_display_names"]


def FLOAT_FORMAT(value: float) -> str:  # noqa: N802 - a pandas option value, named like one
    """Four significant digits, plain decimals from 1e-4 to 1e6 (pandas' default switches a
    whole column to scientific notation when one value is small)."""
    if value != value or value in (float("inf"), float("-inf")):  # NaN, infinities
        return str(value)
    if value == 0 or 1e-4 <= abs(value) < 1e6:
        return f"{value:.4g}" if abs(value) < 1 else f"{value:,.4g}"
    return f"{value:.3e}"


def format_warning(message, category, filename, lineno, line=None) -> str:
    """``warning (UserWarning): <message>``, wrapped at 100 characters, no file or line."""
    text = " ".join(str(message).split())
    return textwrap.fill(f"warning ({category.__name__}): {text}", width=100) + "\n"


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Print :func:`format_warning`'s line on standard output (not the red standard error)."""
    print(format_warning(message, category, filename, lineno, line), end="", flush=True)


def readable_output() -> None:
    """Set pandas' display options and the warnings' form for a notebook (see the module)."""
    pd.set_option("display.max_colwidth", None)
    pd.set_option("display.float_format", FLOAT_FORMAT)
    warnings.showwarning = show_warning
    warnings.simplefilter("once")


def with_display_names(table: pd.DataFrame, column: str = "method") -> pd.DataFrame:
    """A copy of ``table`` whose method names read as in the browser ("LRP-α2β1", "Grad-CAM at
    dense block 3"): the values of ``column``, an index level of that name, and column labels
    that are method names (a pivot with one column per method).

    Parameters
    ----------
    table : pandas.DataFrame
    column : str
        The name of the column (or index level) holding method names.
    """
    shown = table.copy()
    if column in shown.columns:
        shown[column] = shown[column].map(display_name)
    if column in (shown.index.names or []):
        if isinstance(shown.index, pd.MultiIndex):
            level = shown.index.names.index(column)
            shown.index = shown.index.set_levels(
                shown.index.levels[level].map(display_name), level=level)
        else:
            shown.index = shown.index.map(display_name).rename(column)
    if shown.columns.name == column:
        shown.columns = shown.columns.map(display_name).rename(column)
    return shown
