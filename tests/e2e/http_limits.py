#!/usr/bin/env python3
"""Transport limits and timeouts of Arbor's HTTP server, over raw sockets (python3 stdlib only).

Spec: shared/specs/robustness.md case 10 (431 for headers over 64 KB, 413 for bodies over the
limit, a flood of tiny chunks rejected with bounded memory), request smuggling shapes, slow
clients (408, the header timeout), server.request_timeout_s, and a non-streaming client that
hangs up. Issue 9: idle connections with half a head starve no one, HEAD keeps keep-alive in
step, CORS preflights and headers, and, on a second server with a small
server.max_connections, the longest-idle connection makes room (503 only when all are busy).
After every case the server must still answer; at the end no KV page may be in use.

The server must run with: --set server.read_timeout_s=1 --set server.request_timeout_s=0.5
--set server.header_timeout_s=0.5 --set 'server.cors_allowed_origins=["http://cors.example"]'
(request_timeout_s 0.1 on a GPU, where the tiny model can finish a 2000-token generation
within 0.5 s); the one at --small-url with --set server.max_connections=4 (and no API key).

  tests/e2e/http_limits.py --url http://127.0.0.1:PORT --pid PID --small-url URL [--key KEY]

Prints one line per failed case, then `arbor-tests: N passed, M failed, 0 skipped`.
"""

import argparse
import json
import re
import socket
import sys
import threading
import time
import urllib.parse

BODY_LIMIT = 8 << 20


class Conn:
    """One raw HTTP/1.1 connection: send bytes, read responses (Content-Length or chunked)."""

    def __init__(self, host, port, timeout=10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b''

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError('connection closed')
        self.buf += chunk

    def _line(self):
        while b'\r\n' not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b'\r\n', 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def response(self, until_close=False, head=False):
        """(status, headers dict lower-cased, body bytes) of the next response; `head`: the
        answer to a HEAD request, which has no body whatever its Content-Length says."""
        line = self._line()
        parts = line.split(b' ', 2)
        if len(parts) < 2 or not line.startswith(b'HTTP/1.') or not parts[1].isdigit():
            raise ValueError('not a status line: %r' % line[:80])
        status = int(parts[1])
        headers = {}
        while True:
            line = self._line()
            if not line:
                break
            k, v = line.split(b':', 1)
            headers[k.decode().strip().lower()] = v.decode().strip()
        if status in (100, 204) or head:
            return status, headers, b''
        if headers.get('transfer-encoding', '').lower() == 'chunked':
            body = b''
            while True:
                size = int(self._line().split(b';')[0], 16)
                if size == 0:
                    self._line()
                    break
                body += self._exact(size)
                self._exact(2)
            return status, headers, body
        if 'content-length' in headers:
            return status, headers, self._exact(int(headers['content-length']))
        if until_close:
            try:
                while True:
                    self._fill()
            except EOFError:
                pass
            body, self.buf = self.buf, b''
            return status, headers, body
        return status, headers, b''

    def untouched(self):
        """Whether the connection is still open and nothing has arrived on it (no wait)."""
        self.sock.setblocking(False)
        try:
            self.sock.recv(1, socket.MSG_PEEK)  # bytes, or b'' for a close
            return False
        except BlockingIOError:
            return True
        except OSError:
            return False
        finally:
            self.sock.setblocking(True)

    def closed_by_peer(self, wait=3.0):
        self.sock.settimeout(wait)
        try:
            return self.sock.recv(1) == b''
        except (socket.timeout, OSError):
            return False

    def close(self):
        self.sock.close()


def error_ok(status, body, want):
    """The OpenAI error envelope with code == status == want; returns a problem string or ''."""
    if status != want:
        return 'status %d, want %d: %r' % (status, want, body[:200])
    try:
        err = json.loads(body)['error']
    except (ValueError, KeyError, TypeError):
        return 'not an OpenAI error body: %r' % body[:200]
    if err.get('code') != want or not err.get('message') or 'type' not in err or 'param' not in err:
        return 'bad error object %r' % err
    return ''


def rss_kib(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--url', required=True)
    ap.add_argument('--pid', type=int, required=True, help='the server process (its memory is watched)')
    ap.add_argument('--key', default='')
    ap.add_argument('--small-url', required=True, help='a second server, with server.max_connections=4')
    ap.add_argument('--model', default='tiny')
    args = ap.parse_args()
    u = urllib.parse.urlparse(args.url)
    host, port = u.hostname, u.port
    if host not in ('127.0.0.1', 'localhost', '::1'):
        print('http_limits.py: --url must be loopback', file=sys.stderr)
        return 2
    small = urllib.parse.urlparse(args.small_url)
    auth = ('Authorization: Bearer %s\r\n' % args.key) if args.key else ''
    passed, failed = 0, 0

    def case(name, problem):
        nonlocal passed, failed
        if not problem:
            passed += 1
        else:
            failed += 1
            print('FAIL %s: %s' % (name, problem))

    def request(raw, until_close=False, timeout=10.0, to=None):
        c = Conn(*(to or (host, port)), timeout)
        try:
            c.send(raw)
            return c.response(until_close)
        finally:
            c.close()

    def completion(body):
        data = json.dumps(body).encode()
        return ('POST /v1/completions HTTP/1.1\r\nHost: x\r\n%sContent-Type: application/json\r\n'
                'Content-Length: %d\r\n\r\n' % (auth, len(data))).encode() + data

    def healthy(name):
        """After each case: a normal completion still works."""
        try:
            st, _, body = request(completion({'model': args.model, 'prompt': 'still there', 'max_tokens': 2}))
            return '' if st == 200 else '%s: normal completion afterwards got %d %r' % (name, st, body[:200])
        except (OSError, EOFError) as e:
            return '%s: normal completion afterwards failed: %s' % (name, e)

    def _run(fn):
        try:
            return fn()
        except (OSError, EOFError, ValueError) as e:
            return '%s: %s' % (type(e).__name__, e)

    def check(name, fn):
        case(name, _run(fn) or healthy(name))

    # ------------------------------------------------------------ header limits (431)
    def headers_just_under():
        st, _, body = request(b'GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: ' + b'a' * 60000 + b'\r\n\r\n')
        return '' if st == 200 else 'a 60 KB header got %d %r' % (st, body[:200])
    check('header_60KB_accepted', headers_just_under)

    big_headers = [
        ('header_70KB_431', b'GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: ' + b'a' * 70000 + b'\r\n\r\n'),
        ('1000_headers_100KB_431', b'GET /health HTTP/1.1\r\nHost: x\r\n' +
         b''.join(b'X-H%d: %s\r\n' % (i, b'v' * 90) for i in range(1000)) + b'\r\n'),
        ('request_target_70KB_431', b'GET /health?' + b'q' * 70000 + b' HTTP/1.1\r\nHost: x\r\n\r\n'),
    ]
    for name, raw in big_headers:
        check(name, lambda raw=raw: error_ok(*request(raw)[::2], 431))

    def flood(head, piece, times, want, watch=None):
        """Sends `head`, then `piece` `times` times (or until the server hangs up on us), and
        expects the error `want`; `watch(i)` runs between pieces."""
        c = Conn(host, port)
        try:
            c.send(head)
            try:
                for i in range(times):
                    c.send(piece)
                    if watch:
                        watch(i)
            except OSError:
                pass  # the server answered and closed while we were still sending
            st, _, body = c.response()
            return error_ok(st, body, want)
        finally:
            c.close()

    chunked_head = ('POST /v1/completions HTTP/1.1\r\nHost: x\r\n%sContent-Type: application/json\r\n'
                    'Transfer-Encoding: chunked\r\n\r\n' % auth).encode()

    # Header bytes that never end: refused at the limit, not buffered without bound.
    check('unterminated_header_431',
          lambda: flood(b'GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: ', b'b' * 4096, 64, 431))

    # ------------------------------------------------------------ body limits (413)
    def declared_too_big():
        c = Conn(host, port, timeout=5)
        try:
            # Only the header is sent: the refusal must not wait for a body.
            c.send(('POST /v1/completions HTTP/1.1\r\nHost: x\r\n%sContent-Type: application/json\r\n'
                    'Content-Length: %d\r\n\r\n' % (auth, 9 << 20)).encode())
            st, _, body = c.response()
            return error_ok(st, body, 413)
        finally:
            c.close()
    check('content_length_9MiB_413_before_body', declared_too_big)

    check('chunked_body_9MiB_413',
          lambda: flood(chunked_head, b'%x\r\n%s\r\n' % (65536, b'a' * 65536), 9 * 16, 413))

    def chunk_flood():
        before = rss_kib(args.pid)
        peak = [before]

        def watch(i):
            if i % 10 == 0:
                peak[0] = max(peak[0], rss_kib(args.pid))
        problem = flood(chunked_head, b'1\r\na\r\n' * 5000, 100, 413, watch)  # 500,000 chunks
        grew = max(peak[0], rss_kib(args.pid)) - before
        if not problem and grew > 64 * 1024:
            problem = 'server RSS grew by %d KiB during the flood' % grew
        return problem
    check('tiny_chunk_flood_413_bounded_memory', chunk_flood)

    # A chunk-size line that never ends: refused at 64 KiB, not buffered without bound.
    check('endless_chunk_extension_413', lambda: flood(chunked_head + b'1;e=', b'x' * 4096, 256, 413))

    # ------------------------------------------------------------ malformed framing (400)
    malformed = [
        # A body the server would read as the next request (smuggling) must be refused.
        ('transfer_encoding_gzip_400', b'POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n'
         b'GET /health HTTP/1.1\r\n\r\n'),
        ('content_length_and_chunked_400', b'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n'
         b'Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n'),
        ('two_content_lengths_400', b'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n'
         b'Content-Length: 3\r\n\r\n{}x'),
        ('garbage_request_line_400', b'\x16\x03\x01 hello there\r\n\r\n'),
    ]
    for name, raw in malformed:
        check(name, lambda raw=raw: error_ok(*request(raw)[::2], 400))

    def wrong_method():
        st, h, out = request(b'GET /v1/completions HTTP/1.1\r\nHost: x\r\n\r\n')
        p = error_ok(st, out, 405)
        return p or ('' if h.get('allow') == 'POST' else 'Allow header %r' % h.get('allow'))
    check('get_on_completions_405_with_allow', wrong_method)

    # ------------------------------------------------------------ connection behaviour
    def pipelined():
        c = Conn(host, port)
        try:
            c.send(b'GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n')
            a, b = c.response(), c.response()
            return '' if (a[0], b[0]) == (200, 404) else 'pipelined answers %d, %d' % (a[0], b[0])
        finally:
            c.close()
    check('pipelined_requests_in_order', pipelined)

    def expect_continue():
        data = json.dumps({'model': args.model, 'prompt': 'hi', 'max_tokens': 2}).encode()
        c = Conn(host, port)
        try:
            c.send(('POST /v1/completions HTTP/1.1\r\nHost: x\r\n%sContent-Type: application/json\r\n'
                    'Content-Length: %d\r\nExpect: 100-continue\r\n\r\n' % (auth, len(data))).encode())
            st, _, _ = c.response()
            if st != 100:
                return 'got %d before the body, want 100' % st
            c.send(data)
            st, _, body = c.response()
            return '' if st == 200 else 'after 100 Continue: %d %r' % (st, body[:200])
        finally:
            c.close()
    check('expect_100_continue', expect_continue)

    def http10_stream():
        data = json.dumps({'model': args.model, 'prompt': 'hi', 'max_tokens': 3, 'stream': True}).encode()
        st, h, body = request(('POST /v1/completions HTTP/1.0\r\n%sContent-Type: application/json\r\n'
                               'Content-Length: %d\r\n\r\n' % (auth, len(data))).encode() + data,
                              until_close=True)
        if st != 200 or 'chunked' in h.get('transfer-encoding', ''):
            return 'HTTP/1.0 stream: %d %r' % (st, h)
        return '' if body.rstrip().endswith(b'data: [DONE]') else 'HTTP/1.0 stream body %r' % body[-200:]
    check('http10_streaming_ends_with_close', http10_stream)

    def slow_client():
        c = Conn(host, port)
        try:
            c.send(b'GET /health HTTP/1.1\r\nHost: x\r\n')  # and never the blank line
            t0 = time.monotonic()
            st, _, body = c.response()
            dt = time.monotonic() - t0
            p = error_ok(st, body, 408)
            return p or ('' if dt < 5 else '408 came after %.1f s (read_timeout_s 1)' % dt)
        finally:
            c.close()
    check('stalled_request_408', slow_client)

    # ------------------------------------------------------------ the event loop (issue 9)
    def idle_heads():
        idle = []
        try:
            for _ in range(300):
                c = Conn(host, port)
                c.send(b'GET /health HTTP/1.1\r\n')  # and never the rest
                idle.append(c)
            t0 = time.monotonic()
            st, _, body = request(b'GET /health HTTP/1.1\r\nHost: x\r\n\r\n', timeout=5)
            dt = time.monotonic() - t0
            if st != 200:
                return 'beside 300 half-sent heads a new client got %d %r' % (st, body[:200])
            return '' if dt < 0.4 else 'beside 300 half-sent heads a new client waited %.2f s' % dt
        finally:
            for c in idle:
                c.close()
    check('300_half_sent_heads_starve_no_one', idle_heads)

    def head_then_get():
        c = Conn(host, port)
        try:
            c.send(b'HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n')
            st, h, _ = c.response(head=True)
            if st != 200 or h.get('content-length', '0') == '0':
                return 'HEAD /health: %d %r' % (st, h)
            c.send(b'GET /health HTTP/1.1\r\nHost: x\r\n\r\n')
            st, _, body = c.response()
            if st != 200 or json.loads(body) != {'status': 'ok'}:
                return 'GET after HEAD: %d %r' % (st, body[:200])
            # A route without GET: 405 with Allow and without its body, the connection in step.
            c.send(b'HEAD /v1/completions HTTP/1.1\r\nHost: x\r\n\r\n')
            st, h, _ = c.response(head=True)
            if st != 405 or h.get('allow') != 'POST':
                return 'HEAD /v1/completions: %d %r' % (st, h)
            c.send(b'GET /health HTTP/1.1\r\nHost: x\r\n\r\n')
            st, _, body = c.response()
            if st != 200:
                return 'GET after the 405 to HEAD: %d %r' % (st, body[:200])
            return '' if not c.buf else 'bytes after the last response: %r' % c.buf[:100]
        finally:
            c.close()
    check('head_then_get_on_one_connection', head_then_get)

    def header_timeout():
        c = Conn(host, port)
        try:
            t0 = time.monotonic()
            c.send(b'GET /health HTTP/1.1\r\nHost: x\r\n')  # the rest of the head never comes
            st, _, body = c.response()
            dt = time.monotonic() - t0
            p = error_ok(st, body, 408)
            if p:
                return p
            if b'headers' not in body:
                return 'not the header timeout: %r' % body[:200]
            return '' if 0.3 <= dt < 0.95 else '408 after %.2f s (header_timeout_s 0.5, read_timeout_s 1)' % dt
        finally:
            c.close()
    check('header_timeout_408', header_timeout)

    def slow_body():
        data = json.dumps({'model': args.model, 'prompt': 'hi', 'max_tokens': 2}).encode()
        c = Conn(host, port)
        try:
            c.send(('POST /v1/completions HTTP/1.1\r\nHost: x\r\n%sContent-Type: application/json\r\n'
                    'Content-Length: %d\r\n\r\n' % (auth, len(data))).encode() + data[:5])
            time.sleep(0.7)  # the client's pace: past the header timeout, within the read timeout
            c.send(data[5:])
            st, _, body = c.response()
            return '' if st == 200 else 'a body done within read_timeout_s got %d %r' % (st, body[:200])
        finally:
            c.close()
    check('body_past_header_timeout_200', slow_body)

    origin = 'http://cors.example'

    def cors_preflight():
        st, h, _ = request(('OPTIONS /v1/completions HTTP/1.1\r\nHost: x\r\nOrigin: %s\r\n'
                            'Access-Control-Request-Method: POST\r\n'
                            'Access-Control-Request-Headers: authorization, content-type\r\n\r\n' % origin).encode())
        want = {'access-control-allow-origin': origin, 'access-control-allow-methods': 'POST',
                'access-control-allow-headers': 'authorization, content-type'}
        wrong = {k: h.get(k) for k, v in want.items() if h.get(k) != v}
        if st != 204 or wrong or 'access-control-max-age' not in h:
            return 'preflight: %d, headers %r' % (st, h)
        return ''
    check('cors_preflight_204', cors_preflight)

    def cors_answers():
        problems = []
        for what, raw, want in [
                ('no API key', ('POST /v1/completions HTTP/1.1\r\nHost: x\r\nOrigin: %s\r\n'
                                'Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}' % origin).encode(), 401),
                ('health', ('GET /health HTTP/1.1\r\nHost: x\r\nOrigin: %s\r\n\r\n' % origin).encode(), 200),
                ('no route', ('GET /nope HTTP/1.1\r\nHost: x\r\nOrigin: %s\r\n\r\n' % origin).encode(), 404),
                ('wrong method', ('DELETE /health HTTP/1.1\r\nHost: x\r\nOrigin: %s\r\n\r\n' % origin).encode(), 405)]:
            st, h, _ = request(raw)
            if st != want or h.get('access-control-allow-origin') != origin or h.get('vary') != 'Origin':
                problems.append('%s: %d %r' % (what, st, {k: v for k, v in h.items() if 'origin' in k or k == 'vary'}))
        return '; '.join(problems)
    check('cors_headers_on_answers_and_errors', cors_answers)

    def cors_other_origin():
        st, h, _ = request(b'OPTIONS /v1/completions HTTP/1.1\r\nHost: x\r\nOrigin: http://evil.example\r\n'
                           b'Access-Control-Request-Method: POST\r\n\r\n')
        if st != 403 or any(k.startswith('access-control-') for k in h):
            return 'preflight from another origin: %d %r' % (st, h)
        st, h, _ = request(b'GET /health HTTP/1.1\r\nHost: x\r\nOrigin: http://evil.example\r\n\r\n')
        return '' if st == 200 and 'access-control-allow-origin' not in h else 'GET: %d %r' % (st, h)
    check('cors_other_origin_gets_none', cors_other_origin)

    # A second server, with server.max_connections=4.
    small_at = (small.hostname, small.port)
    health = b'GET /health HTTP/1.1\r\nHost: x\r\n\r\n'

    def small_health_200(within):
        """A new client on the small server gets 200 within `within` s (retrying 503s)."""
        t0 = time.monotonic()
        st = None
        while time.monotonic() - t0 < within:
            st = request(health, to=small_at)[0]
            if st == 200:
                return ''
            time.sleep(0.05)
        return 'the small server still answers %s after %.0f s' % (st, within)

    def eviction():
        idle = [Conn(*small_at) for _ in range(4)]  # accepted in this order: the first is the oldest
        try:
            st, _, body = request(health, to=small_at)
            if st != 200:
                return 'a fifth client got %d %r' % (st, body[:200])
            if not idle[0].closed_by_peer(wait=3):
                return 'the longest-idle connection was not the one closed'
            kept = [c.untouched() for c in idle[1:]]
            return '' if all(kept) else 'newer idle connections were closed too: %r' % kept
        finally:
            for c in idle:
                c.close()
    case('max_connections_evicts_longest_idle', _run(eviction))

    def all_busy():
        streams = []
        try:
            for i in range(4):
                c = Conn(*small_at, timeout=10)
                data = json.dumps({'model': args.model, 'prompt': 'busy %d' % i, 'max_tokens': 2000,
                                   'ignore_eos': True, 'stream': True}).encode()
                c.send(('POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n'
                        'Content-Length: %d\r\n\r\n' % len(data)).encode() + data)
                streams.append(c)
            for c in streams:  # every one inside its handler: the stream has begun
                while b'\r\n\r\n' not in c.buf:
                    c._fill()
                if not c.buf.startswith(b'HTTP/1.1 200'):
                    return 'a stream began with %r' % c.buf[:80]
            st, h, body = request(health, to=small_at)
            p = error_ok(st, body, 503)
            if p:
                return 'with every connection streaming: ' + p
            if h.get('connection') != 'close':
                return '503 without Connection: close: %r' % h
        finally:
            for c in streams:
                c.close()
        return small_health_200(5)  # the streams are cancelled and their connections close
    case('max_connections_all_busy_503', _run(all_busy))

    # ------------------------------------------------ request timeout (server.request_timeout_s)
    def metric(name):
        st, _, body = request(b'GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n')
        for line in body.decode().splitlines():
            if line.startswith(name + ' '):
                return float(line.split()[-1])
        return 0.0

    def timed_out_generations():
        before = metric('arbor:request_timeouts_total')
        outcomes = [None] * 16

        def one(i):
            body = {'model': args.model, 'prompt': 'tell me everything %d' % i, 'max_tokens': 2000,
                    'ignore_eos': True, 'stream': i % 2 == 1}
            t0 = time.monotonic()
            try:
                st, _, out = request(completion(body), timeout=20)
                dt = time.monotonic() - t0
                if body['stream']:
                    events = [json.loads(l[6:]) for l in out.decode().splitlines()
                              if l.startswith('data: {')]
                    finish = [c['finish_reason'] for e in events for c in e['choices'] if c['finish_reason']]
                    done = out.rstrip().endswith(b'data: [DONE]')
                else:
                    finish = [c['finish_reason'] for c in json.loads(out)['choices']]
                    done = True
                outcomes[i] = (st, finish, done, dt)
            except (OSError, EOFError, ValueError) as e:
                outcomes[i] = ('error', str(e), False, 0)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(outcomes))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        bad = [o for o in outcomes if not o or o[0] != 200 or o[1] != ['abort'] or not o[2] or o[3] > 5]
        if bad:
            return '%d of %d requests did not end as aborted within 5 s: %r' % (len(bad), len(outcomes), bad[:3])
        grew = metric('arbor:request_timeouts_total') - before
        return '' if grew >= len(outcomes) else 'arbor:request_timeouts_total grew by %g' % grew
    check('request_timeout_aborts_json_and_stream', timed_out_generations)

    def nonstream_hangup():
        before = metric('arbor:client_disconnects_total')
        c = Conn(host, port)
        c.send(completion({'model': args.model, 'prompt': 'and then', 'max_tokens': 2000, 'ignore_eos': True}))
        time.sleep(0.1)
        c.close()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3:
            if metric('arbor:client_disconnects_total') > before:
                return ''
            time.sleep(0.05)
        return 'a non-streaming client that hung up was not noticed within 3 s'
    check('nonstream_client_hangup_cancels', nonstream_hangup)

    # ------------------------------------------------------------ nothing leaked
    def pages_idle():
        t0 = time.monotonic()
        v = None
        while time.monotonic() - t0 < 10:
            v = metric('arbor:pool_pages{kind="kv"}')
            if v == 0:
                return ''
            time.sleep(0.2)
        return 'arbor:pool_pages{kind="kv"} = %s ten seconds after the last case' % v
    check('kv_pages_idle_at_end', pages_idle)

    print('arbor-tests: %d passed, %d failed, 0 skipped' % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == '__main__':
    sys.exit(main())
