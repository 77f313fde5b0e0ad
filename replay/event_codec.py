"""Versioned event payloads: one codec for each family of events (workflow, session).

A stored record carries its type name and, in its metadata, the schema
version it was written with. Reading an older schema runs the family's
upcasters in order (``UPCASTERS[n]`` migrates schema ``n`` to ``n + 1``);
a newer schema than the code knows is refused rather than guessed at.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, Generic, TypeVar

import msgspec
from sagalog.storage import Event, NewEvent

from sagalog.errors import DecodingError

E = TypeVar("E")

Upcaster = Callable[[str, dict[str, Any]], dict[str, Any]]
"""``f(type, fields)``: a payload of one schema version migrated to the next."""


class EventCodec(Generic[E]):
    """Encode and decode one family of events.

    Args:
        union: the union of the family's event Structs (tagged by class name).
        kind: what the family is called in messages ("workflow", "session").
        schema: the schema version this code writes.
        type_names: the type names of the family, as stored in ``Event.type``.
        upcasters: ``{n: f}`` migrations; the dict is read at decode time, so
            entries added after construction count.
    """

    def __init__(
        self,
        union: Any,
        kind: str,
        schema: int,
        type_names: Collection[str],
        upcasters: dict[int, Upcaster],
    ) -> None:
        self._union = union
        self._kind = kind
        self._schema = schema
        self._schema_text = str(schema)
        self._type_names = type_names
        self._upcasters = upcasters
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder: msgspec.msgpack.Decoder[E] = msgspec.msgpack.Decoder(union)

    def encode(self, event: E, metadata: dict[str, str] | None = None) -> NewEvent:
        """An event as a record to append (type name, payload, schema in metadata)."""
        meta = {**metadata, "schema": self._schema_text} if metadata else {"schema": self._schema_text}
        return NewEvent(type(event).__name__, self._encoder.encode(event), meta)

    def decode(self, stored: Event | NewEvent) -> E:
        """The event a stored record holds (or a record a notice told: ``Touch.last``).

        Raises:
            DecodingError: not an event of this family, a corrupt payload, or a
                schema newer than this code knows.
        """
        if isinstance(stored, Event):
            where = f"event {stored.version} ({stored.type}) of {stored.stream_id!r}"
        else:
            where = f"a {stored.type} event a notice told"
        if stored.type not in self._type_names:
            raise DecodingError(f"{where} is not a {self._kind} event")
        try:
            schema = int(stored.metadata.get("schema", "1"))
        except ValueError:
            raise DecodingError(f"{where} has an invalid schema {stored.metadata['schema']!r}") from None
        if schema > self._schema:
            raise DecodingError(
                f"{where} was written with schema {schema}; this sagalog reads up to {self._schema}"
            )
        event: E
        try:
            if schema == self._schema:
                event = self._decoder.decode(stored.payload)
            else:
                fields: dict[str, Any] = msgspec.msgpack.decode(stored.payload)
                for version in range(schema, self._schema):
                    fields = self._upcasters[version](stored.type, fields)
                event = msgspec.convert(fields, type=self._union)
        except (msgspec.DecodeError, msgspec.ValidationError, KeyError, TypeError) as exc:
            raise DecodingError(f"{where} cannot be decoded: {exc}") from exc
        if type(event).__name__ != stored.type:
            raise DecodingError(f"{where} holds a {type(event).__name__} payload")
        return event
