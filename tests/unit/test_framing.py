"""Telling request heads from bodies on a connection's bytes, and refusing heads over their limits."""

from __future__ import annotations

from courseflow.http.framing import Framing, HeadLimits, Phase

LIMITS = HeadLimits(request_line=64, header_bytes=128, headers=4)
GET = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"


def fed(*reads: bytes) -> Framing:
    framing = Framing(LIMITS)
    for data in reads:
        assert framing.feed(data) is None
    return framing


def refusal_status(*reads: bytes) -> int | None:
    framing = Framing(LIMITS)
    for data in reads:
        refusal = framing.feed(data)
        if refusal is not None:
            return refusal.status
    return None


def test_a_head_split_anywhere_is_seen_to_end() -> None:
    for cut in range(1, len(GET)):
        framing = fed(GET[:cut])
        assert framing.phase is Phase.HEAD
        assert framing.feed(GET[cut:]) is None
        assert (framing.phase, framing.heads) == (Phase.IDLE, 1)


def test_a_body_of_known_length_is_read_before_the_next_head() -> None:
    post = b"POST /e HTTP/1.1\r\nContent-Length: 5\r\n\r\n"
    framing = fed(post + b"ab")
    assert framing.phase is Phase.BODY
    framing = fed(post + b"abcde" + GET[:5])
    assert (framing.phase, framing.heads) == (Phase.HEAD, 1)


def test_a_chunked_body_ends_after_its_last_chunk_and_trailers() -> None:
    head = b"POST /e HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    framing = fed(head, b"3\r\nabc\r\n", b"0\r\nX-T: 1\r\n")
    assert framing.phase is Phase.BODY
    assert framing.feed(b"\r\n" + GET) is None
    assert (framing.phase, framing.heads) == (Phase.IDLE, 2)


def test_a_websocket_upgrade_leaves_http() -> None:
    framing = fed(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello")
    assert framing.phase is Phase.TUNNEL
    # Without `Connection: upgrade` the parser serves it as a plain request: the limits still apply.
    assert fed(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n").phase is Phase.IDLE


def test_heads_over_their_limits_are_refused_as_they_arrive() -> None:
    assert refusal_status(b"GET /" + b"a" * 70) == 414
    assert refusal_status(b"GET /" + b"a" * 70 + b" HTTP/1.1\r\n\r\n") == 414
    assert refusal_status(b"GET / HTTP/1.1\r\nX: " + b"v" * 130) == 431
    assert refusal_status(b"GET / HTTP/1.1\r\n", *[b"X: v\r\n"] * 30) == 431
    assert refusal_status(b"GET / HTTP/1.1\r\n" + b"A: 1\r\n" * 5 + b"\r\n") == 431
    assert refusal_status(b"GET / HTTP/1.1\r\n" + b"A: 1\r\n" * 4 + b"\r\n") is None


def test_a_pipelined_second_head_is_measured_too() -> None:
    assert refusal_status(GET + b"GET / HTTP/1.1\r\nX: " + b"v" * 130 + b"\r\n\r\n") == 431


def test_chunk_lines_and_trailers_are_bounded() -> None:
    head = b"POST /e HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert refusal_status(head, b"f" * 2000) == 400
    assert refusal_status(head, b"zz\r\n") == 400
    assert refusal_status(head, b"0\r\n", *[b"X-T: 1\r\n"] * 40) == 431


def test_each_request_of_a_read_is_found_where_it_starts() -> None:
    post = b"POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
    framing = fed()
    assert framing.feed(GET + post + b"\r\n" + GET[:10]) is None
    assert framing.starts == [0, len(GET), len(GET) + len(post) + 2]
    # The rest of a head begun in the read before starts nothing; a body's bytes like a head's start nothing.
    assert framing.feed(GET[10:] + b"POST") is None
    assert framing.starts == [len(GET) - 10]
    framing = fed(b"POST /x HTTP/1.1\r\nContent-Length: 40\r\n\r\n")
    assert framing.feed(GET) is None and framing.starts == []
