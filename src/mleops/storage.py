"""Where users keep data: local files, directories of Parquet files, object stores.

``pyarrow.fs`` resolves the URI (local paths, ``file://``, ``s3://`` - AWS or any S3-compatible
store through the standard ``AWS_*`` variables and ``AWS_ENDPOINT_URL`` - ``gs://``,
``hdfs://``, ``abfs://``); any other scheme goes through fsspec when it and its plugin are
installed. Reading returns the Arrow table together with a sha256 of the *content* read (not
of object versions or ETags, which differ between stores and copies), so a pipeline keyed on
it re-runs when the bytes change and nowhere else: a directory hashes each file's relative
path and bytes, in sorted order. Every way a read can fail becomes one ``DataError`` line.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from mleops.errors import DataError

PARQUET = (".parquet", ".pq")
_DENIED = ("ACCESS_DENIED", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
           "HTTP status 403", "Forbidden", "PermissionDenied", "Permission denied")


@dataclass(frozen=True)
class Loaded:
    """An Arrow table, the sha256 of the bytes it was read from, and how many files."""

    table: object  # pyarrow.Table
    sha256: str
    files: int
    uri: str


def is_remote(uri: str) -> bool:
    """True for URIs a process elsewhere can read too (anything but local paths)."""
    return "://" in uri and not uri.startswith("file://")


def locate(uri: str):
    """``(filesystem, path)`` for ``uri``; DataError for schemes nobody here can read."""
    from pyarrow import fs

    if not uri:
        raise DataError("no data URI given")
    if not is_remote(uri):
        path = uri[len("file://"):] if uri.startswith("file://") else uri
        return fs.LocalFileSystem(), os.path.abspath(path)
    try:
        return fs.FileSystem.from_uri(uri)
    except Exception as e:  # ArrowInvalid: unrecognised scheme; OSError: bad bucket name...
        if "Unrecognized filesystem type" not in str(e):
            raise DataError(f"cannot open {uri}: {first_line(e)}") from None
    try:
        import fsspec
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        f, path = fsspec.core.url_to_fs(uri)
    except ImportError:
        scheme = uri.split("://", 1)[0]
        raise DataError(f"no filesystem for {scheme}:// in {uri}: pyarrow reads file, s3, gs, "
                        f"hdfs and abfs; others need fsspec and its {scheme} plugin "
                        f"installed") from None
    except Exception as e:  # fsspec: unknown protocol, missing plugin, bad URL
        raise DataError(f"cannot open {uri}: {first_line(e)}") from None
    return PyFileSystem(FSSpecHandler(f)), path


def read_arrow(uri: str) -> Loaded:
    """The table at ``uri`` (a CSV/Parquet file, or a directory of Parquet files, hive
    partitions included), with its content hash."""
    if not is_remote(uri):
        path = os.path.abspath(uri.removeprefix("file://") if uri else "")
        if uri and os.path.isfile(path):
            return _read_local_file(path, uri)
    f, path = locate(uri)
    info = file_info(f, path, uri)
    try:
        if info.type.name == "Directory":
            return _read_directory(f, path, uri)
        with f.open_input_file(path) as stream:
            data = stream.read()
    except DataError:
        raise
    except Exception as e:
        raise read_error(e, uri) from None
    return Loaded(_parse(data, path, uri), hashlib.sha256(data).hexdigest(), 1, uri)


def write_text(uri: str, text: str) -> None:
    """Write ``text`` at ``uri`` (folders made), through the same filesystems as reads."""
    f, path = locate(uri)
    try:
        parent = path.rsplit("/", 1)[0]
        if parent and parent != path:
            f.create_dir(parent, recursive=True)
        with f.open_output_stream(path) as s:
            s.write(text.encode())
    except Exception as e:
        raise read_error(e, uri, writing=True) from None


def _read_local_file(path: str, uri: str) -> Loaded:
    """A local file the way pyarrow reads it best (by path), hashed as it is on disk; no
    ``pyarrow.fs`` for the common case (a CLI process then starts no I/O machinery)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return Loaded(_parse(path, path, uri), h.hexdigest(), 1, uri)


def file_info(f, path: str, uri: str):
    try:
        info = f.get_file_info(path)
    except Exception as e:
        raise read_error(e, uri) from None
    if info.type.name != "NotFound":
        return info
    bucket = path.split("/", 1)[0]
    if is_remote(uri) and bucket != path:
        try:
            gone = f.get_file_info(bucket).type.name == "NotFound"
        except Exception:
            gone = False
        if gone:
            raise DataError(f"bucket {bucket!r} not found (reading {uri})")
    raise DataError(f"data not found: {uri}")


def is_parquet(f, path: str) -> bool:
    """A Parquet file by suffix, or by its magic bytes (KFP artifacts have no suffix)."""
    if path.endswith(PARQUET):
        return True
    try:
        with f.open_input_file(path) as fh:
            return fh.read(4) == b"PAR1"
    except Exception:  # unreadable here: the reader that follows names the problem
        return False


def _parse(source, path: str, uri: str):
    """CSV or Parquet (by ``path``'s suffix) from ``source``: a local path, or bytes read."""
    import pyarrow as pa

    if isinstance(source, bytes):
        source = pa.BufferReader(source)
    try:
        if path.endswith(PARQUET):
            import pyarrow.parquet as pq

            return pq.read_table(source)
        import pyarrow.csv as pcsv

        return pcsv.read_csv(source)
    except Exception as e:  # pyarrow's ArrowInvalid & co. carry a useful message
        raise DataError(f"cannot read {uri}: {first_line(e)}") from None


def _read_directory(f, path: str, uri: str) -> Loaded:
    import pyarrow.dataset as ds
    from pyarrow.fs import FileSelector

    found = f.get_file_info(FileSelector(path, recursive=True))
    files = sorted(i.path for i in found if i.type.name == "File" and i.path.endswith(PARQUET)
                   and not os.path.basename(i.path).startswith((".", "_")))
    if not files:
        raise DataError(f"no Parquet files (*.parquet, *.pq) under {uri}")
    h = hashlib.sha256()
    for p in files:
        with f.open_input_stream(p) as s:
            data = s.read()
        h.update(f"{os.path.relpath(p, path)}\0{len(data)}\0".encode())
        h.update(hashlib.sha256(data).digest())
    try:
        table = ds.dataset(files, filesystem=f, format="parquet", partition_base_dir=path,
                           partitioning=ds.partitioning(flavor="hive")).to_table()
    except Exception as e:
        raise DataError(f"cannot read the Parquet dataset {uri}: {first_line(e)}") from None
    return Loaded(table, h.hexdigest(), len(files), uri)


def read_error(e: Exception, uri: str, *, writing: bool = False) -> DataError:
    msg = str(e)
    verb, doing = ("write", "writing") if writing else ("read", "reading")
    if any(s in msg for s in _DENIED):
        return DataError(f"access denied {doing} {uri}: check the credentials "
                         f"(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or the pod's service "
                         f"account) and the bucket policy")
    if isinstance(e, FileNotFoundError):
        return DataError(f"data not found: {uri}")
    return DataError(f"cannot {verb} {uri}: {first_line(e)}")


def first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
