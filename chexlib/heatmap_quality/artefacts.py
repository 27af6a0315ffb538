"""Grid artefacts: how much a heatmap's edges line up with a fixed pixel period.

Strided layers (DenseNet-121's stride-2 first convolution, its stride-2 max pool and the 2x2
average pools of the transitions) can stamp a regular grid on LRP maps: relevance that jumps at
every 4th or 8th pixel. :func:`blockiness` measures it: the neighbour differences of a map,
grouped by pixel position modulo the period, should be alike in every group when there is no
grid; a grid puts them into one group.
"""

from __future__ import annotations

import numpy as np

__all__ = ["blockiness", "blockiness_table"]


def blockiness(maps, period: int) -> float:
    """The grid ratio of heatmaps at a pixel period: 1.0 = no grid, ``period`` = pure blocks.

    For each direction (along rows, along columns), the absolute differences between neighbouring
    pixels are grouped by the position of the first of the two modulo ``period`` and averaged
    per group over all maps; the ratio of that direction is the largest group mean over the mean
    of the group means. The result is the larger of the two directions' ratios. Each map is
    divided by its own mean absolute difference first, so that every map weighs the same whatever
    its scale; maps without any difference (blank or constant) are left out.

    Parameters
    ----------
    maps : array-like [H, W] or [N, H, W] (or any leading shape)
    period : int
        The grid period in pixels, >= 2; H and W must be at least ``2 * period``.

    Returns
    -------
    float
        NaN when every map is constant.

    Raises
    ------
    ValueError
        ``period`` below 2, or maps smaller than two periods.
    """
    array = np.asarray(maps, dtype=np.float64)
    if isinstance(period, bool) or not isinstance(period, (int, np.integer)) or period < 2:
        raise ValueError(f"period={period!r}: expected an integer >= 2")
    if array.ndim < 2 or min(array.shape[-2:]) < 2 * period:
        raise ValueError(f"maps of shape {array.shape}: expected [..., H, W] with H, W >= "
                         f"{2 * period} for period {period}")
    array = array.reshape(-1, *array.shape[-2:])
    along_rows = np.abs(np.diff(array, axis=2))  # [N, H, W-1]: between column x and x+1
    along_columns = np.abs(np.diff(array, axis=1))  # [N, H-1, W]
    scale = (along_rows.sum(axis=(1, 2)) + along_columns.sum(axis=(1, 2))) / (
        along_rows[0].size + along_columns[0].size)
    keep = scale > 0
    if not keep.any():
        return float("nan")
    along_rows = along_rows[keep] / scale[keep, None, None]
    along_columns = along_columns[keep] / scale[keep, None, None]
    ratios = []
    for differences, axis in ((along_rows, 2), (along_columns, 1)):
        positions = np.arange(differences.shape[axis]) % period
        means = np.array([np.take(differences, np.flatnonzero(positions == r), axis=axis).mean()
                          for r in range(period)])
        ratios.append(means.max() / means.mean() if means.mean() > 0 else 1.0)
    return float(max(ratios))


def blockiness_table(maps_by_method, periods=(4, 8)):
    """:func:`blockiness` of each method's maps at each period.

    Parameters
    ----------
    maps_by_method : mapping str -> array-like [..., H, W]
    periods : sequence of int

    Returns
    -------
    DataFrame
        Index ``method``, one column per period (``period_4``, ``period_8``), and ``maps``, the
        number of maps.
    """
    import pandas as pd

    rows = []
    for method, maps in maps_by_method.items():
        array = np.asarray(maps)
        row = {"method": method, "maps": int(np.prod(array.shape[:-2], dtype=int))}
        row.update({f"period_{p}": blockiness(array, p) for p in periods})
        rows.append(row)
    return pd.DataFrame(rows).set_index("method")
