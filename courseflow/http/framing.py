"""Where each request's head and body end on a connection, read from its bytes as they arrive.

Only as much of HTTP/1.1 as tells a head from a body (Content-Length, chunked coding, a WebSocket upgrade):
the parser behind it still reads everything. Heads are measured as they come, so an oversized one is refused
after at most its limit in bytes, whatever the client keeps sending.
"""

from __future__ import annotations

import enum
import re
from typing import Final

import msgspec


class Phase(enum.Enum):
    IDLE = "idle"  # between requests: nothing of the next one yet
    HEAD = "head"  # part of a request line and header fields
    BODY = "body"  # part of a body (fixed length or chunked)
    TUNNEL = "tunnel"  # upgraded to a WebSocket: no longer HTTP/1.1


class HeadLimits(msgspec.Struct, frozen=True):
    request_line: int
    header_bytes: int
    headers: int


class ConnectionRefusal(msgspec.Struct, frozen=True):
    """Why a connection is answered and closed before its request reaches the application."""

    status: int
    code: str
    detail: str


_CRLF: Final = b"\r\n"
_END: Final = b"\r\n\r\n"
# A chunk-size line: hex digits, then optional extensions; longer lines are an attack, not a chunk.
_CHUNK_LINE_MAX: Final = 1024
_CHUNK_SIZE: Final = re.compile(rb"[0-9a-fA-F]{1,15}")


class _Reading(enum.Enum):
    LENGTH = 1
    CHUNK_SIZE = 2
    CHUNK_DATA = 3
    CHUNK_END = 4
    TRAILERS = 5


class Framing:
    """One connection's position in its stream of requests; `feed` each read, in order."""

    __slots__ = (
        "_body",
        "_few_headers",
        "_head",
        "_limits",
        "_line",
        "_max_head",
        "_remaining",
        "heads",
        "phase",
        "starts",
    )

    def __init__(self, limits: HeadLimits) -> None:
        self._limits = limits
        self.phase = Phase.IDLE
        # Heads completed so far: a new one restarts the head's clock.
        self.heads = 0
        # Where in the last read each request began (its request line's first byte): where pipelined ones part.
        self.starts: list[int] = []
        self._head = bytearray()
        self._body = _Reading.LENGTH
        self._remaining = 0
        self._line = bytearray()
        self._max_head = limits.request_line + limits.header_bytes + 4
        # Header fields shorter than this cannot be too many: each line takes at least 4 bytes ("a:" CRLF).
        self._few_headers = 4 * (limits.headers + 1)

    def feed(self, data: bytes) -> ConnectionRefusal | None:
        position, size, phase = 0, len(data), self.phase
        self.starts.clear()
        if phase is Phase.IDLE and size > 4 and data[0] != 13 and data[0] != 10:
            # The usual read: one whole request, its head and all of its body.
            end = data.find(_END, 0, self._max_head)
            if end > 0:
                self.starts.append(0)
                refusal = self._measured(data, 0, data.find(_CRLF), end)
                if refusal is not None:
                    return refusal
                position = end + 4
                if self.phase is Phase.IDLE and position == size:
                    return None
                if self.phase is Phase.BODY and self._body is _Reading.LENGTH and self._remaining == size - position:
                    self.phase = Phase.IDLE
                    return None
        while position < size:
            if self.phase is Phase.TUNNEL:
                return None
            if self.phase is Phase.BODY:
                read = self._read_body(data, position)
                if isinstance(read, ConnectionRefusal):
                    return read
                position = read
                continue
            if self.phase is Phase.IDLE:
                # An empty line before a request line is to be ignored (RFC 9112, 2.2).
                while position < size and data[position] in b"\r\n":
                    position += 1
                if position == size:
                    return None
                self.phase = Phase.HEAD
                self.starts.append(position)
            taken = self._read_head(data, position)
            if isinstance(taken, ConnectionRefusal):
                return taken
            position = taken
        return None

    def _read_head(self, data: bytes, position: int) -> int | ConnectionRefusal:
        head, limits = self._head, self._limits
        if not head:
            # The usual case, a whole head in one read: measured where it lies, not copied.
            end = data.find(_END, position, position + self._max_head)
            if end >= 0:
                refusal = self._measured(data, position, data.find(_CRLF, position), end)
                return refusal if refusal is not None else end + 4
        before = len(head)
        # Never more than the largest head allowed (and its final empty line) is kept.
        room = self._max_head - before
        head += data[position : position + room + 1]
        end = head.find(_END, max(0, before - 3))
        line_end = head.find(_CRLF)
        if end < 0:
            if (line_end < 0 and len(head) > limits.request_line) or line_end > limits.request_line:
                return _line_too_long(limits)
            if line_end >= 0 and len(head) - line_end - 2 > limits.header_bytes:
                return _headers_too_large(limits)
            return len(data)
        refusal = self._measured(bytes(head), 0, line_end, end)
        head.clear()
        return refusal if refusal is not None else position + end + 4 - before

    def _measured(self, head: bytes, start: int, line_end: int, end: int) -> ConnectionRefusal | None:
        """A whole head (`head[start:end + 4]`) within its limits, then what follows it; or why not."""
        limits = self._limits
        if line_end - start > limits.request_line:
            return _line_too_long(limits)
        if end - line_end > limits.header_bytes:
            return _headers_too_large(limits)
        if end - line_end >= self._few_headers and head.count(_CRLF, line_end + 2, end + 2) > limits.headers:
            return ConnectionRefusal(
                431, "too_many_headers", f"a request may have at most {limits.headers} header fields"
            )
        self.heads += 1
        # Field names compared in lower case; each field line starts with CRLF here.
        fields = head[line_end : end + 2].lower()
        if b"\r\nupgrade:" in fields and _value(fields, b"\r\nupgrade:") == b"websocket":
            connection = _value(fields, b"\r\nconnection:").split(b",")
            if b"upgrade" in (token.strip() for token in connection):
                self.phase = Phase.TUNNEL
                return None
        # The last Transfer-Encoding line holds the final coding; a repeated Content-Length the parser refuses.
        if (
            b"\r\ntransfer-encoding:" in fields
            and _value(fields, b"\r\ntransfer-encoding:", last=True).rsplit(b",", 1)[-1].strip() == b"chunked"
        ):
            self.phase, self._body = Phase.BODY, _Reading.CHUNK_SIZE
            return None
        length = _value(fields, b"\r\ncontent-length:")
        # Not digits: the parser refuses the request (400) and closes the connection.
        if length.isdigit() and int(length) > 0:
            self.phase, self._body, self._remaining = Phase.BODY, _Reading.LENGTH, int(length)
        else:
            self.phase = Phase.IDLE
        return None

    def _read_body(self, data: bytes, position: int) -> int | ConnectionRefusal:
        body = self._body
        if body is _Reading.LENGTH or body is _Reading.CHUNK_DATA or body is _Reading.CHUNK_END:
            taken = min(self._remaining, len(data) - position)
            self._remaining -= taken
            if self._remaining == 0:
                if body is _Reading.CHUNK_DATA:
                    self._body, self._remaining = _Reading.CHUNK_END, 2
                elif body is _Reading.CHUNK_END:
                    self._body = _Reading.CHUNK_SIZE
                else:
                    self.phase = Phase.IDLE
            return position + taken
        newline = data.find(b"\n", position)
        stop = len(data) if newline < 0 else newline + 1
        self._line += data[position:stop]
        if newline < 0:
            if len(self._line) > (_CHUNK_LINE_MAX if body is _Reading.CHUNK_SIZE else self._limits.header_bytes):
                return ConnectionRefusal(400, "invalid_chunk", "a chunk-size line or trailer field is too long")
            return stop
        line = bytes(self._line)
        self._line.clear()
        if body is _Reading.CHUNK_SIZE:
            size = _CHUNK_SIZE.match(line)
            if size is None:
                return ConnectionRefusal(400, "invalid_chunk", "a chunk size is not a hexadecimal number")
            self._remaining = int(size.group(), 16)
            self._body = _Reading.CHUNK_DATA if self._remaining else _Reading.TRAILERS
        elif line in (b"\r\n", b"\n"):
            self.phase = Phase.IDLE  # the empty line after the trailer fields ends the message
        else:
            # Trailer fields: bounded together like header fields (`_remaining` counts them after the last chunk).
            self._remaining += len(line)
            if self._remaining > self._limits.header_bytes:
                return _headers_too_large(self._limits)
        return stop


def _value(fields: bytes, name: bytes, last: bool = False) -> bytes:
    """The value of the field line starting with `name` (CRLF, name, colon), first or last; b"" if none."""
    at = fields.rfind(name) if last else fields.find(name)
    if at < 0:
        return b""
    at += len(name)
    return fields[at : fields.find(_CRLF, at)].strip()


def _line_too_long(limits: HeadLimits) -> ConnectionRefusal:
    return ConnectionRefusal(
        414, "request_line_too_long", f"the request line is longer than {limits.request_line} bytes"
    )


def _headers_too_large(limits: HeadLimits) -> ConnectionRefusal:
    return ConnectionRefusal(
        431, "headers_too_large", f"the header fields together are longer than {limits.header_bytes} bytes"
    )
