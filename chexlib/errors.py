"""Exceptions raised by chexlib.

Every error names what was wrong (the file, row or parameter) and what was expected. The classes
subclass the built-in exception a caller would catch anyway (``ValueError``,
``FileNotFoundError``), so ``except ValueError`` keeps working.
"""


class ChexlibError(Exception):
    """Base class of every chexlib error."""


class LabelFileError(ChexlibError, ValueError):
    """A CheXpert-format CSV is malformed: wrong columns, values, paths or duplicates."""


class ImageFileError(ChexlibError, ValueError):
    """An image file is unreadable or corrupt."""


class MissingFileError(ChexlibError, FileNotFoundError):
    """A file or folder chexlib needs does not exist."""


class ParameterError(ChexlibError, ValueError):
    """A run parameter has an unknown name, a wrong type or an out-of-range value."""


class PhantomError(ChexlibError, ValueError):
    """A phantom folder that is incomplete, of another version, or whose files disagree."""


class MaskFormatError(ChexlibError, ValueError):
    """A ground-truth mask file does not follow the CheXlocalize / COCO-RLE format."""


class MetricInputError(ChexlibError, ValueError):
    """Labels, probabilities, groups or options given to chexlib.metrics are malformed."""


class CheckpointError(ChexlibError, ValueError):
    """A checkpoint or weights file is not what was expected, or refused as unsafe or corrupt."""


class LockBusyError(ChexlibError, TimeoutError):
    """A lock file is held by another process (non-blocking attempt, or the timeout ran out)."""


class RunFolderBusyError(ChexlibError, RuntimeError):
    """Another run is writing into the same run folder (it holds the folder's lock)."""


class OutOfMemoryError(ChexlibError, RuntimeError):
    """A batch did not fit in GPU memory; the message suggests a smaller ``batch_size``."""
