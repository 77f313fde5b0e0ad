"""Values to bytes and back (msgspec msgpack), and the payload codec hook.

Two separate things:

* :func:`encode_value` / :func:`decode_value` turn Python values into payload
  bytes with msgspec (msgpack), with errors that name what could not be encoded.
* a :class:`PayloadCodec` transforms payload bytes on their way into and out of
  the database (compression, encryption); the journal applies it and nothing
  else sees it.
"""

from __future__ import annotations

import zlib
from typing import Any, Protocol, TypeVar

import msgspec

from sagalog.errors import DecodingError, EncodingError

T = TypeVar("T")

_encoder = msgspec.msgpack.Encoder()


def encode_value(value: object, what: str = "value") -> bytes:
    """Encode ``value`` with msgspec msgpack.

    Args:
        value: anything msgspec supports (Structs, dataclasses, builtins, ...).
        what: how to name the value in an error, e.g. ``"argument 'order'"``.

    Raises:
        EncodingError: naming ``what`` and the unsupported type.
    """
    try:
        return _encoder.encode(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise EncodingError(
            f"{what} cannot be encoded: {type(value).__module__}.{type(value).__qualname__} "
            f"is not supported by msgspec ({exc})"
        ) from exc


def decode_value(data: bytes, type: type[T] | Any = Any, what: str = "payload") -> T:
    """Decode msgpack bytes, optionally into ``type``.

    Raises:
        DecodingError: the bytes are corrupt or do not match ``type``.
    """
    try:
        decoded: T = msgspec.msgpack.decode(data, type=type)
        return decoded
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise DecodingError(f"{what} cannot be decoded: {exc}") from exc


class PayloadCodec(Protocol):
    """Transforms payload bytes on their way into and out of the database."""

    def encode(self, data: bytes) -> bytes:
        """Bytes as they should be stored."""
        ...

    def decode(self, data: bytes) -> bytes:
        """Stored bytes back to the original."""
        ...


class IdentityCodec:
    """Stores payloads as they are (the default)."""

    def encode(self, data: bytes) -> bytes:
        """Return ``data`` unchanged."""
        return data

    def decode(self, data: bytes) -> bytes:
        """Return ``data`` unchanged."""
        return data


class ZlibCodec:
    """Compresses payloads with zlib; an example of the codec hook."""

    def __init__(self, level: int = 6) -> None:
        self.level = level

    def encode(self, data: bytes) -> bytes:
        """Compress."""
        return zlib.compress(data, self.level)

    def decode(self, data: bytes) -> bytes:
        """Decompress, or raise DecodingError for bytes that are not zlib data."""
        try:
            return zlib.decompress(data)
        except zlib.error as exc:
            raise DecodingError(f"payload cannot be decompressed: {exc}") from exc
