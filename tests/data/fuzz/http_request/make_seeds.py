#!/usr/bin/env python3
"""Writes the seed corpus of //tests/server/http:request_reader_fuzz_test into this directory.

Each file is one piece-size byte (see request_reader_fuzz.cc: '\\x00' feeds byte by byte, 'A'
in pieces of up to 521 bytes, '~' up to 1 KiB) followed by the bytes a client sends: valid
requests of each framing, pipelined ones, and requests broken in one way each, so the fuzzer
starts from every branch of the reader. Rerun after changing a seed: python3 make_seeds.py
"""
import os

CHUNKED = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"

SEEDS = {
    "get": (b"A", b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n"),
    "get_query_bytewise": (b"\x00", b"GET /v1/models?limit=3&q=a?b HTTP/1.1\r\nHost: x\r\n\r\n"),
    "post_length": (b"~", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                          b"Content-Type: application/json\r\nContent-Length: 16\r\n\r\n"
                          b"{\"prompt\":\"hi\"}\n"),
    "post_chunked_ext_trailers": (b"#", CHUNKED + b"5;ext=1\r\nhello\r\n1A;q=\"a b\"\r\n"
                                  + b"abcdefghijklmnopqrstuvwxyz\r\n0;end\r\nX-Sum: 1\r\n\r\n"),
    "http10_keep_alive": (b"A", b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
    "expect_continue": (b"0", b"POST /v1/completions HTTP/1.1\r\nExpect: 100-continue\r\n"
                              b"Content-Length: 5\r\nConnection: close\r\n\r\nhello"),
    "pipelined_three": (b"~", b"GET /a HTTP/1.1\r\n\r\n"
                              b"POST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
                              + CHUNKED + b"3\r\nxyz\r\n0\r\n\r\nGET /partial HT"),
    "many_chunks": (b"A", CHUNKED + b"1\r\nx\r\n" * 70 + b"0\r\n\r\n"),
    "length_over_limit": (b"A", b"POST / HTTP/1.1\r\nContent-Length: 16385\r\n\r\n"),
    "length_and_chunked": (b"A", b"POST / HTTP/1.1\r\nContent-Length: 3\r\n"
                                 b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
    "two_lengths": (b"A", b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
    "bad_chunk_size": (b"A", CHUNKED + b"zz\r\nabc\r\n0\r\n\r\n"),
    "lf_only": (b"A", b"GET / HTTP/1.1\nHost: x\n\n"),
    "nul_in_value": (b"A", b"GET / HTTP/1.1\r\nX-Nul: a\x00b\r\n\r\n"),
    "header_over_limit": (b"~", b"GET / HTTP/1.1\r\nX-Big: " + b"b" * 4100 + b"\r\n\r\n"),
    # A chunked body of only its last chunk, fed byte by byte: Beast's assertion `n >= 5` in
    # parse_chunk_header aborted the reader (see request_reader_test.cc).
    "last_chunk_bytewise": (b"\x00", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
}

here = os.path.dirname(os.path.abspath(__file__))
for name, (mode, request) in SEEDS.items():
    with open(os.path.join(here, name + ".http"), "wb") as f:
        f.write(mode + request)
