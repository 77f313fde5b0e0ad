"""Masking sensitive fields in everything the replay tool shows.

Payloads are msgpack bytes; the tool turns them into plain JSON values
(:meth:`Redactor.plain`) and, on the way, replaces the value of every map key
that names a sensitive field with ``"***"``. A key is sensitive when it
contains one of the configured names, ignoring case, ``_`` and ``-``:
``password``, ``db_password``, ``accessToken`` and ``card_number`` are all
masked by the default list. Matching errs on the side of masking: an operator
pasting a timeline into a bug report should not leak a card number.
"""

from __future__ import annotations

import base64
import dataclasses
import os
from collections.abc import Iterable, Mapping
from datetime import date, datetime, time, timedelta
from typing import Any
from uuid import UUID

import msgspec

DEFAULT_MASKED_FIELDS: tuple[str, ...] = ("password", "token", "secret", "card")
"""Field names masked unless configured otherwise."""

MASK = "***"
"""What a masked value is shown as."""

MASK_ENV = "SAGALOG_MASK_FIELDS"
"""Environment variable with a comma-separated list replacing the default names."""


_SCALARS = frozenset({type(None), bool, int, float, str})


def _normal(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "")


class Redactor:
    """Turns values into plain JSON values, masking sensitive fields.

    Args:
        fields: names of sensitive fields (default :data:`DEFAULT_MASKED_FIELDS`).
        enabled: False shows every value as stored (``--unmasked``).
    """

    def __init__(self, fields: Iterable[str] = DEFAULT_MASKED_FIELDS, *, enabled: bool = True) -> None:
        self.fields = tuple(f for f in (_normal(n.strip()) for n in fields) if f)
        self.enabled = enabled
        # Payloads repeat the same few keys; a long timeline asks about each one
        # thousands of times.
        self._verdicts: dict[str, bool] = {}

    @classmethod
    def from_env(cls, *, enabled: bool = True) -> Redactor:
        """A redactor with the names from ``SAGALOG_MASK_FIELDS`` (or the default)."""
        configured = os.environ.get(MASK_ENV)
        names = configured.split(",") if configured else DEFAULT_MASKED_FIELDS
        return cls(names, enabled=enabled)

    def masks(self, key: object) -> bool:
        """Whether a map key names a sensitive field."""
        if not self.enabled or not isinstance(key, str):
            return False
        verdict = self._verdicts.get(key)
        if verdict is None:
            if len(self._verdicts) >= 4096:
                self._verdicts.clear()
            normal = _normal(key)
            verdict = self._verdicts[key] = any(name in normal for name in self.fields)
        return verdict

    def payload(self, data: bytes) -> Any:
        """A stored payload as a plain value (see :meth:`plain` for bytes)."""
        return self.plain(data)

    def plain(self, value: Any) -> Any:
        """``value`` as JSON-safe builtins, with sensitive fields masked.

        Structs and dataclasses become maps, datetimes ISO strings. Bytes are
        decoded as msgpack when they are valid msgpack (workflow arguments and
        results are stored that way inside events), else shown as
        ``"base64:<data>"``.
        """
        kind = type(value)
        if kind in _SCALARS:
            return value
        if kind is dict or isinstance(value, Mapping):
            return {str(k): MASK if self.masks(k) else self.plain(v) for k, v in value.items()}
        if kind is list or isinstance(value, list | tuple | set | frozenset):
            return [self.plain(v) for v in value]
        if isinstance(value, bool | int | float | str):  # subclasses (enums, ...)
            return value
        if isinstance(value, bytes | bytearray | memoryview):
            return self._bytes(bytes(value))
        if isinstance(value, datetime | date | time):
            return value.isoformat()
        if isinstance(value, timedelta):
            return value.total_seconds()
        if isinstance(value, UUID):
            return str(value)
        if isinstance(value, msgspec.Struct) or dataclasses.is_dataclass(value):
            return self.plain(
                msgspec.to_builtins(value, builtin_types=(bytes, bytearray, memoryview, datetime))
            )
        return repr(value)

    def _bytes(self, data: bytes) -> Any:
        if data:
            try:
                decoded = msgspec.msgpack.decode(data)
            except (msgspec.DecodeError, msgspec.ValidationError):
                pass
            else:
                return self.plain(decoded)
        return "base64:" + base64.b64encode(data).decode("ascii")


UNMASKED = Redactor(enabled=False)
"""A redactor that masks nothing."""
