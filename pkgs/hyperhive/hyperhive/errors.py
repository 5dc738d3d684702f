"""The error every part of the hive raises for a request it refuses (the wire codes of DESIGN), and the one that
stops the service's start."""

from __future__ import annotations

CODES = ("bad_request", "forbidden", "not_found", "too_large", "conflict", "internal")


class HiveError(Exception):
    """A refusal with a wire code and a sentence a person or a model can act on."""

    def __init__(self, code: str, message: str):
        assert code in CODES, code
        super().__init__(message)
        self.code = code
        self.message = message

    def to_wire(self) -> dict:
        return {"ok": False, "error": {"code": self.code, "message": self.message}}


def bad_request(message: str) -> HiveError:
    return HiveError("bad_request", message)


def forbidden(message: str) -> HiveError:
    return HiveError("forbidden", message)


def not_found(message: str) -> HiveError:
    return HiveError("not_found", message)


def conflict(message: str) -> HiveError:
    return HiveError("conflict", message)


class StartError(SystemExit):
    """The service cannot start (its state directory is another's, its database or a socket cannot be opened, the
    dashboard cannot listen): it stops with this sentence instead of a traceback."""

    def __init__(self, message: str):
        super().__init__(f"hyperhive: {message}")
        self.message = message
