"""A dataset read as bounded batches, and split into per-process shares without overlap.

A fit over data larger than memory never holds the table: :func:`scan` lists its pieces
(each Parquet row group, or a whole CSV file) from file metadata alone, :func:`share` gives
process ``rank`` of ``size`` a contiguous run of them (balanced by row count, every piece to
exactly one process, deterministic, so a restarted job reads the same rows), and
:func:`batches` yields numpy columns of at most ``rows`` rows at a time from the pieces it is
given. Sources are those of :mod:`mleops.storage`: local paths, directories of Parquet
files, object-store URIs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from mleops.errors import DataError
from mleops.storage import PARQUET, file_info, first_line, is_parquet, locate, read_error


@dataclass(frozen=True)
class Piece:
    """One unit of reading: a Parquet row group, or a whole file (``row_group`` None)."""

    path: str
    row_group: int | None
    rows: int  # -1 when only a read can tell (CSV)


@dataclass(frozen=True)
class Scan:
    uri: str
    filesystem: object
    pieces: tuple[Piece, ...]
    columns: tuple[str, ...]
    bytes_on_disk: int

    @property
    def rows(self) -> int:
        """Total rows (-1 when a CSV file's count is unknown until read)."""
        return -1 if any(p.rows < 0 for p in self.pieces) else sum(p.rows for p in self.pieces)


def scan(uri: str) -> Scan:
    """The pieces of ``uri`` (a CSV/Parquet file or a directory of Parquet files)."""
    f, path = locate(uri)
    info = file_info(f, path, uri)
    try:
        if info.type.name == "Directory":
            from pyarrow.fs import FileSelector

            found = f.get_file_info(FileSelector(path, recursive=True))
            files = sorted((i for i in found if i.type.name == "File"
                            and i.path.endswith(PARQUET)
                            and not os.path.basename(i.path).startswith((".", "_"))),
                           key=lambda i: i.path)
            if not files:
                raise DataError(f"no Parquet files (*.parquet, *.pq) under {uri}")
        else:
            files = [info]
        pieces: list[Piece] = []
        columns: tuple[str, ...] | None = None
        for i in files:
            cols, parts = _pieces(f, i.path)
            if columns is not None and cols != columns:
                raise DataError(f"{i.path} has columns {list(cols)}, the first file "
                                f"{list(columns)}: one schema per dataset")
            columns = cols
            pieces += parts
    except DataError:
        raise
    except Exception as e:
        raise read_error(e, uri) from None
    return Scan(uri, f, tuple(pieces), columns or (), sum(int(i.size or 0) for i in files))


def _pieces(f, path: str) -> tuple[tuple[str, ...], list[Piece]]:
    if not is_parquet(f, path):  # CSV: its header names the columns
        import pyarrow.csv as pcsv

        with f.open_input_stream(path) as s:
            names = tuple(pcsv.open_csv(s).schema.names)
        return names, [Piece(path, None, -1)]
    import pyarrow.parquet as pq

    with f.open_input_file(path) as fh:
        meta = pq.ParquetFile(fh).metadata
        names = tuple(meta.schema.to_arrow_schema().names)
        return names, [Piece(path, g, meta.row_group(g).num_rows)
                       for g in range(meta.num_row_groups)]


def share(pieces: tuple[Piece, ...], rank: int, size: int) -> tuple[Piece, ...]:
    """Process ``rank``'s contiguous run of ``pieces``: piece i goes to the process whose
    equal slice of all rows holds the middle of piece i. Unknown row counts (CSV) weigh 1."""
    if not 0 <= rank < size:
        raise DataError(f"process {rank} of {size}: rank out of range")
    weights = np.asarray([max(p.rows, 1) for p in pieces], dtype=np.float64)
    middle = np.cumsum(weights) - weights / 2
    owner = np.minimum((middle * size / max(weights.sum(), 1.0)).astype(int), size - 1)
    return tuple(p for p, o in zip(pieces, owner) if o == rank)


def batches(source: Scan, pieces: tuple[Piece, ...], columns: list[str],
            rows: int) -> Iterator[dict[str, np.ndarray]]:
    """float64 columns of at most ``rows`` rows, read piece by piece (small row groups are
    joined into full batches, so the fit's compiled kernels see one shape)."""
    missing = [c for c in columns if c not in source.columns]
    if missing:
        raise DataError(f"column(s) {missing} not in {source.uri}; it has "
                        f"{list(source.columns)}")
    buffered: list[dict[str, np.ndarray]] = []
    held = 0
    for record in _prefetched(_records(source, pieces, columns, rows)):
        buffered.append(record)
        held += len(record[columns[0]])
        while held >= rows:
            out, buffered, held = _take(buffered, columns, rows)
            yield out
    if held:
        yield _take(buffered, columns, held)[0]


def _prefetched(records: Iterator[dict[str, np.ndarray]], depth: int = 2
                ) -> Iterator[dict[str, np.ndarray]]:
    """The next records read by a thread while the caller computes on this one (pyarrow's
    decoding and XLA's kernels both release the GIL, so the read and the fit overlap)."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def work() -> None:
        try:
            for r in records:
                if stop.is_set():
                    return
                q.put(r)
            q.put(done)
        except BaseException as e:  # handed to the consumer, raised there
            q.put(e)

    threading.Thread(target=work, daemon=True, name="mleops-read").start()
    try:
        while (item := q.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while not q.empty():  # unblock a producer waiting on a full queue
            q.get_nowait()


def _take(buffered: list[dict[str, np.ndarray]], columns: list[str], n: int):
    if len(buffered) == 1 and len(buffered[0][columns[0]]) == n:  # the common case: no copy
        return buffered[0], [], 0
    joined = {c: np.concatenate([b[c] for b in buffered]) for c in columns}
    rest = {c: v[n:] for c, v in joined.items()}
    left = len(rest[columns[0]])
    return {c: v[:n] for c, v in joined.items()}, ([rest] if left else []), left


def _runs(pieces) -> Iterator[tuple[Piece, list[int] | None]]:
    """Consecutive row groups of one file together: pyarrow then decodes them straight into
    batches of the requested size (no joining copies at row-group edges)."""
    run: list[Piece] = []
    for p in pieces:
        if run and (p.path != run[0].path or p.row_group is None):
            yield run[0], [q.row_group for q in run]
            run = []
        if p.row_group is None:
            yield p, None
        else:
            run.append(p)
    if run:
        yield run[0], [q.row_group for q in run]


def _records(source: Scan, pieces, columns, rows) -> Iterator[dict[str, np.ndarray]]:
    f = source.filesystem
    for p, groups in _runs(pieces):
        try:
            if groups is None:
                import pyarrow.csv as pcsv

                with f.open_input_stream(p.path) as s:
                    reader = pcsv.open_csv(s, read_options=pcsv.ReadOptions(
                        block_size=max(1 << 20, min(rows * 16, 64 << 20))))
                    for b in reader:
                        yield _numeric(b, columns, p)
                continue
            import pyarrow.parquet as pq

            with f.open_input_file(p.path) as fh:
                for b in pq.ParquetFile(fh).iter_batches(batch_size=rows, row_groups=groups,
                                                          columns=columns):
                    yield _numeric(b, columns, p)
        except DataError:
            raise
        except Exception as e:
            raise DataError(f"cannot read {p.path} of {source.uri}: {first_line(e)}") from None


def _numeric(batch, columns: list[str], piece: Piece) -> dict[str, np.ndarray]:
    out = {}
    for c in columns:
        col = batch.column(c)
        if col.null_count:
            raise DataError(f"column {c!r} has {col.null_count} missing value(s) in {piece.path}"
                            + (f" (row group {piece.row_group})" if piece.row_group is not None
                               else ""))
        try:
            out[c] = np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError(f"column {c!r} is not numeric ({col.type}) in {piece.path}"
                            ) from None
    return out





UNITS = {"": 1, "B": 1, "KB": 10 ** 3, "MB": 10 ** 6, "GB": 10 ** 9, "TB": 10 ** 12,
         "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40}
#: bytes a streamed fit holds per row and column in flight: the Arrow batch, its float64
#: copy, the padded device arrays and the kernels' temporaries (measured by
#: benchmarks/streamed_fit.py: see the README)
BYTES_PER_CELL = 48


def parse_size(text: str) -> int:
    """``512MB``, ``2GB``, ``1.5GiB``, ``1e9`` -> bytes."""
    import re

    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
    unit = (m.group(2).upper() if m else "").removesuffix("YTES").replace("IBB", "IB")
    if not m or unit not in UNITS or float(m.group(1)) <= 0:
        raise DataError(f"memory size {text!r} is not a size like 512MB, 2GB or 1GiB")
    return int(float(m.group(1)) * UNITS[unit])


def memory_available() -> int:
    """Bytes this process may still use: the cgroup's limit (a pod's) less its usage, or the
    machine's available memory, whichever is smaller."""
    candidates = []
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                          "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit) as fl, open(usage) as fu:
                raw = fl.read().strip()
                if raw != "max" and int(raw) < 1 << 60:
                    candidates.append(int(raw) - int(fu.read().strip()))
        except (OSError, ValueError):
            continue
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    candidates.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    return max(min(candidates), 0) if candidates else 1 << 33


def batch_rows(max_memory: int, columns: int, flag: str = "--max-memory") -> int:
    """Rows per batch so that a streamed fit holds about ``max_memory`` bytes."""
    rows = max_memory // (BYTES_PER_CELL * max(columns, 1))
    if rows < 1000:
        raise DataError(f"{flag} {max_memory} bytes holds only {rows} rows of "
                        f"{columns} column(s); give at least "
                        f"{1000 * BYTES_PER_CELL * columns / 1e6:.1f}MB")
    return int(rows)


#: row groups smaller than this are joined into larger batches (per-batch dispatch then
#: costs more than the joining copy)
MIN_ALIGNED_ROWS = 1 << 16


def aligned_rows(pieces: tuple[Piece, ...], rows: int) -> int:
    """The batch size to read with at most ``rows`` rows: the row groups' common size when
    it fits (pyarrow then hands each row group over without a copy: 1e9 rows read in 6.1 s
    against 7.7 s when batches straddle row groups), else ``rows``."""
    sizes = [p.rows for p in pieces if p.row_group is not None and p.rows > 0]
    if not sizes:
        return rows
    common = max(set(sizes), key=sizes.count)
    return common if MIN_ALIGNED_ROWS <= common <= rows else rows


def needs_streaming(source: Scan, columns: int) -> bool:
    """Whether the in-memory fit of these columns would not fit in the memory available
    (in memory a fit holds several float64 copies of every column it reads)."""
    rows = source.rows if source.rows >= 0 else source.bytes_on_disk // 8
    return rows * columns * BYTES_PER_CELL > memory_available() // 2
__all__ = ["BYTES_PER_CELL", "Piece", "Scan", "aligned_rows", "batch_rows", "batches", "memory_available",
           "needs_streaming", "parse_size", "scan", "share"]
