"""Decode-and-resize-once image cache: a uint8 memory map of every image of a label frame.

Decoding and resizing a 320 x 390 JPEG costs a few milliseconds; over CheXpert's 223,414 images
that is minutes per epoch. The cache does it once and keeps the result as ``[N, S, S]`` uint8 in
a ``.npy`` file that every epoch, notebook and process maps into memory (the OS page cache shares
it between DataLoader workers).

``chexlib.data.cache.key``          the cache key and the files it names
``chexlib.data.cache.checksums``    when a built cache is valid: metadata and row checksums
``chexlib.data.cache.journal``      the journaled, resumable build
``chexlib.data.cache.decode``       decoding chunks, in this process or a pool of processes
``chexlib.data.cache.image_cache``  :class:`ImageCache`: open or build, under the lock; the rows

Files in ``cache_dir``
----------------------
``<key>.npy``                the images, row ``i`` = row ``i`` of the label frame
                             (``numpy.lib.format``)
``<key>.json``               metadata: key, version, csv, data root, image size, n, created,
                             failed images
``.<key>.partial.npy``       the array of a build in progress (or interrupted)
``.<key>.partial.jsonl``     its journal: which chunks of rows are finished
``.<key>.lock``              the build lock (empty; stays on disk)

The key is a SHA-256 of the label CSV's bytes, the data root, the image size, the ordered list
of ``Path`` values, the size and modification time of every image, :data:`CACHE_VERSION` and the
resize method. A different CSV, size or file list therefore gives a new key and a new cache.
Image *contents* are not hashed (reading 11 GB to check a cache would defeat it): after
replacing images under an unchanged CSV in a way that keeps their size and time stamp, pass
``force=True``.

Crash safety: the metadata is written last and is the commit marker. A cache counts as valid
only if the metadata exists, matches the key, the array's shape and dtype match it, and the
array's rows match their checksums (``digests``: BLAKE2b-128 of every :data:`DIGEST_ROWS` rows,
computed when the build finishes). Each open verifies every checksum of an array up to
:data:`VERIFY_ALL_BYTES` (the phantom's caches: milliseconds) and a random sample of
:data:`VERIFY_SAMPLE` chunks plus the last one of a larger array (CheXpert's), so a cache
deleted, truncated or overwritten between notebooks is rebuilt, never used. Anything else is
rebuilt too.

Resume: rows are decoded in chunks of :data:`CHUNK_ROWS` on a fixed grid (row 0, C, 2C, ...;
independent of ``workers``) straight into ``.<key>.partial.npy``. After a chunk's rows are
flushed to that file, the main process appends one line to the journal and ``fsync``-s it::

    {"journal": "chexlib image cache", "key": ..., "n": N, "image_size": S, "chunk_rows": C}
    {"start": 0, "stop": 256, "failed": {"17": {"path": ..., "error": ..., "message": ...}}}
    ...

The first line is the header; the grid is the header's ``chunk_rows``, so a resume lines up even
if :data:`CHUNK_ROWS` or ``workers`` changed. A build stopped in any way (exception, Ctrl-C,
SIGKILL) is continued by the next :meth:`ImageCache.open_or_build` of the same key: it keeps
the partial array if its header matches, skips the chunks the journal lists and decodes the
rest. Journal lines that do not parse (a line torn by the kill) or do not fit the grid are
ignored, and the journal is rewritten without them before new lines are appended. A partial
array with a wrong header, or a journal with a wrong header, starts the build afresh, as does
``force=True``. When every chunk is done, the partial array is ``fsync``-ed and renamed to
``<key>.npy``, the journal is deleted and the metadata (failures merged from the journal) is
written.

Concurrency: everything that writes the cache happens while holding an advisory lock on
``.<key>.lock`` (:func:`chexlib.files.file_lock`). A second process that wants the same cache
waits for it, re-validates, and reuses the finished cache. The lock dies with its holder (even
with SIGKILL), so no stale lock ever blocks a later build. A valid cache without failed images
is opened without taking the lock, so a read-only copy of a cache folder still works.

Images that are missing or corrupt do not stop the build: they are recorded in the metadata
(``failed``: row -> path, error class, message) and stored as zeros; reading such a row raises
the recorded error, naming the file. Failed rows are retried each time the cache is opened, so
a repaired file is picked up without a rebuild.
"""

from __future__ import annotations

from chexlib.data.cache.checksums import DIGEST_ROWS, VERIFY_ALL_BYTES, VERIFY_SAMPLE, chunk_digests
from chexlib.data.cache.image_cache import ImageCache
from chexlib.data.cache.journal import CHUNK_ROWS
from chexlib.data.cache.key import CACHE_VERSION, cache_key

__all__ = [
    "CACHE_VERSION",
    "CHUNK_ROWS",
    "DIGEST_ROWS",
    "VERIFY_ALL_BYTES",
    "VERIFY_SAMPLE",
    "ImageCache",
    "cache_key",
    "chunk_digests",
]
