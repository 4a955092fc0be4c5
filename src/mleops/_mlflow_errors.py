"""How mleops reads MLflow failures: unreachable server, error codes, short messages."""

from __future__ import annotations

from .errors import MleopsError

_UNREACHABLE = ("Max retries exceeded", "Connection refused", "Failed to establish",
                "timeout exception", "Read timed out", "Connection aborted", "Connection reset")


class RegistryError(MleopsError, RuntimeError):
    """The registry cannot do what was asked; the message names the model, version or URI."""


def _unreachable(exc: BaseException) -> bool:
    """True when ``exc`` (or an exception it wraps) means the server could not be reached."""
    import requests

    kinds = (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError,
             TimeoutError)
    seen, e = set(), exc
    while e is not None and id(e) not in seen:
        if isinstance(e, kinds) or any(h in str(e) for h in _UNREACHABLE):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def _code(exc: BaseException) -> str | None:
    return getattr(exc, "error_code", None)


def _brief(exc: BaseException, limit: int = 300) -> str:
    text = getattr(exc, "message", None) or str(exc)
    return text if len(text) <= limit else text[:limit] + "..."


__all__ = ["RegistryError"]
