#!/usr/bin/env python3
"""Load test for Arbor's streaming completions (python3 stdlib only, loopback only).

200 concurrent streaming /v1/completions; about 30% of the clients close their socket
mid-stream. Then 200 long requests (half streamed) whose clients give up after 0.5 s (spec case 12). Every client that stays connected must get a complete, well-formed SSE stream
ending in `data: [DONE]`; afterwards the server must be healthy, answer a new request within
5 s, and its Prometheus `/metrics` must show no KV pages in use. Last, 5,000 idle connections
(silent, or with a request head begun and never ended) are held open while 300 streaming
completions run: all 300 must get 200 and a complete stream, no idle connection may be closed
or refused, and /health must answer throughout.

  tests/e2e/load_test.py --url http://127.0.0.1:PORT [--key KEY]

The idle phase needs the server's idle and header timeouts longer than the phase (run.sh sets
server.idle_timeout_s, header_timeout_s and read_timeout_s to 120) and about 5,400 descriptors
on each side: the client raises its soft RLIMIT_NOFILE to the hard limit.

Prints one line per failed case, then `arbor-tests: N passed, M failed, 0 skipped`.
"""

import argparse
import http.client
import json
import random
import re
import resource
import socket
import struct
import sys
import threading
import time
import urllib.parse

# Gauge names accepted for "KV pages in use" (the brief names the first two shapes).
KV_GAUGES = [
    (re.compile(r'^arbor[:_]kv_pages_used(?:\{[^}]*\})?\s+(\S+)$'), 'arbor:kv_pages_used'),
    (re.compile(r'^arbor[:_]kv_pages_in_use(?:\{[^}]*\})?\s+(\S+)$'), 'arbor:kv_pages_in_use'),
    (re.compile(r'^arbor[:_]pool_pages(?:_used|_in_use)?\{[^}]*kind="kv"[^}]*\}\s+(\S+)$'),
     'arbor:pool_pages{kind="kv"}'),
]
ABORT_COUNTER = re.compile(r'^(arbor[:_][A-Za-z0-9_:]*(?:abort|dropped|disconnect)[A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)$')

WORDS = ('alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho '
         'sigma tau upsilon phi chi psi omega').split()


class Result:
    def __init__(self, idx, disconnect, max_tokens):
        self.idx = idx
        self.disconnect = disconnect
        self.max_tokens = max_tokens
        self.status = None
        self.content_type = None
        self.events = 0
        self.problems = []
        self.done = False
        self.elapsed = None
        self.finished_early = False
        self.first_event = None  # monotonic time of the first SSE event
        self.last_event = None   # monotonic time the stream ended (or the client hung up)


def parse_events(buf):
    """Split an SSE byte buffer into complete `data:` payloads and the unparsed rest."""
    events = []
    while True:
        cut = buf.find(b'\n\n')
        if cut < 0:
            return events, buf
        block, buf = buf[:cut], buf[cut + 2:]
        data = []
        for line in block.split(b'\n'):
            line = line.rstrip(b'\r')
            if line.startswith(b'data:'):
                data.append(line[5:].lstrip(b' '))
            elif line and not line.startswith(b':'):
                events.append(('bad', line))
        if data:
            events.append(('data', b'\n'.join(data)))


def client(args, host, port, res, barrier):
    body = json.dumps({
        'model': args.model,
        'prompt': ' '.join(random.Random(res.idx).choice(WORDS) for _ in range(8 + res.idx % 24)),
        'max_tokens': res.max_tokens,
        'temperature': 0.8,
        'seed': res.idx,
        'ignore_eos': True,
        'stream': True,
        'stream_options': {'include_usage': True},
    })
    headers = {'Content-Type': 'application/json'}
    if args.key:
        headers['Authorization'] = 'Bearer ' + args.key
    conn = http.client.HTTPConnection(host, port, timeout=args.deadline)
    try:
        barrier.wait(timeout=30)
    except threading.BrokenBarrierError:
        pass
    t0 = time.monotonic()
    try:
        conn.request('POST', '/v1/completions', body=body, headers=headers)
        resp = conn.getresponse()
        res.status = resp.status
        res.content_type = resp.getheader('Content-Type', '')
        if resp.status != 200:
            res.problems.append('status %d: %s' % (resp.status, resp.read(300)[:300]))
            return
        if not res.content_type.startswith('text/event-stream'):
            res.problems.append('Content-Type %r' % res.content_type)
        buf = b''
        finish = None
        usage = None
        cut_after = random.Random(1000 + res.idx).randint(1, 4)
        ids = set()
        while True:
            chunk = resp.read1(65536)
            if not chunk:
                break
            events, buf = parse_events(buf + chunk)
            now = time.monotonic()
            if events and res.first_event is None:
                res.first_event = now
            res.last_event = now
            for kind, data in events:
                if kind == 'bad':
                    res.problems.append('non-data SSE line %r' % data[:80])
                    continue
                if res.done:
                    res.problems.append('event after [DONE]: %r' % data[:80])
                    continue
                if data == b'[DONE]':
                    res.done = True
                    continue
                res.events += 1
                try:
                    j = json.loads(data)
                except ValueError:
                    res.problems.append('event is not JSON: %r' % data[:80])
                    continue
                if 'error' in j:
                    res.problems.append('error event: %r' % data[:200])
                    continue
                ids.add(j.get('id'))
                if j.get('object') != 'text_completion':
                    res.problems.append('object %r' % j.get('object'))
                if j.get('usage'):
                    usage = j['usage']
                    if j.get('choices'):
                        res.problems.append('usage chunk has non-empty choices')
                for c in j.get('choices') or []:
                    if not isinstance(c.get('text'), str):
                        res.problems.append('choice without text: %r' % c)
                    if c.get('finish_reason'):
                        if finish:
                            res.problems.append('two finish_reasons')
                        finish = c['finish_reason']
            if res.disconnect and res.events >= cut_after and not res.done:
                # Vanish mid-stream: RST the connection without reading the rest.
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
                conn.sock.close()
                return
        if res.disconnect:
            # The whole stream arrived before the client got to hang up: not a server fault, but
            # then this client did not exercise a disconnect (counted in the summary).
            res.disconnect = False
            res.finished_early = True
        if buf.strip():
            res.problems.append('trailing partial event %r' % buf[:80])
        if not res.done:
            res.problems.append('stream ended without data: [DONE] after %d events' % res.events)
        if finish != 'length':
            res.problems.append('finish_reason %r, want length (ignore_eos)' % finish)
        if usage is None:
            res.problems.append('no usage chunk (include_usage)')
        elif usage.get('completion_tokens') != res.max_tokens:
            res.problems.append('usage.completion_tokens %r, want %d' % (usage.get('completion_tokens'), res.max_tokens))
        if len(ids) != 1:
            res.problems.append('%d distinct ids across chunks' % len(ids))
    except (OSError, http.client.HTTPException) as e:
        res.problems.append('%s: %s (after %d events)' % (type(e).__name__, e, res.events))
    finally:
        res.elapsed = time.monotonic() - t0
        try:
            conn.close()
        except OSError:
            pass


def get(host, port, path, key, timeout=10):
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        h = {'Authorization': 'Bearer ' + key} if key else {}
        conn.request('GET', path, headers=h)
        r = conn.getresponse()
        return r.status, r.read().decode('utf-8', 'replace')
    finally:
        conn.close()


def post(host, port, path, obj, key, timeout=10):
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        h = {'Content-Type': 'application/json'}
        if key:
            h['Authorization'] = 'Bearer ' + key
        conn.request('POST', path, body=json.dumps(obj), headers=h)
        r = conn.getresponse()
        return r.status, r.read().decode('utf-8', 'replace')
    finally:
        conn.close()


def counter(metrics_text, name):
    """Value of the sample `name` (with its labels, exactly as exposed), 0 when absent."""
    for line in metrics_text.splitlines():
        if line.startswith(name + ' '):
            return float(line.split()[-1])
    return 0.0


def impatient_client(args, host, port, idx, stream, outcome):
    """A long request whose client gives up 0.5 s after sending it, and closes.

    The 0.5 s is a deadline from the send, not a per-read timeout: a streaming client that gave
    up only on a gap between chunks could leave as its last chunk went out, a request that then
    ends as "length", not "abort". A client whose connection or send itself times out (the
    listen backlog full under load) never reached the server: 'not sent', not a give-up."""
    body = json.dumps({'model': args.model, 'prompt': 'a long story number %d' % idx,
                       'max_tokens': 1500, 'ignore_eos': True, 'stream': stream})
    headers = {'Content-Type': 'application/json'}
    if args.key:
        headers['Authorization'] = 'Bearer ' + args.key
    conn = http.client.HTTPConnection(host, port, timeout=0.5)
    try:
        try:
            conn.request('POST', '/v1/completions', body=body, headers=headers)
        except socket.timeout:
            outcome[idx] = 'not sent'
            return
        deadline = time.monotonic() + 0.5
        resp = conn.getresponse()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout('deadline')
            conn.sock.settimeout(left)
            if not resp.read1(65536):
                break
        outcome[idx] = 'finished'  # the whole answer within 0.5 s: not a timeout
    except socket.timeout:
        outcome[idx] = 'timed out'
    except (OSError, http.client.HTTPException) as e:
        outcome[idx] = '%s: %s' % (type(e).__name__, e)
    finally:
        conn.close()


def impatient_phase(args, host, port, case):
    """Spec case 12 (vLLM's test): 200 long requests whose clients time out at 0.5 s; then a new
    request completes within 5 s, every page comes back and each abort is counted."""
    _, before = get(host, port, '/metrics', args.key)
    outcome = {}
    threads = [threading.Thread(target=impatient_client, args=(args, host, port, i, i % 2 == 0, outcome),
                                daemon=True) for i in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    gave_up = sum(1 for v in outcome.values() if v == 'timed out')
    odd = sorted({v for v in outcome.values() if v not in ('timed out', 'finished', 'not sent')})
    case('impatient_clients_time_out', gave_up >= args.clients // 2 and not odd,
         '%d of %d clients timed out (want >= half); other outcomes: %s' % (gave_up, args.clients, odd[:3]))
    t1 = time.monotonic()
    try:
        st, body = post(host, port, '/v1/completions',
                        {'model': args.model, 'prompt': 'after the impatient ones', 'max_tokens': 8},
                        args.key, timeout=5)
        dt = time.monotonic() - t1
        case('new_request_within_5s_after_timeouts', st == 200 and dt < 5.0,
             'status %s in %.2f s: %s' % (st, dt, body[:200]))
    except (OSError, http.client.HTTPException) as e:
        case('new_request_within_5s_after_timeouts', False, '%s: %s' % (type(e).__name__, e))
    t2 = time.monotonic()
    while True:
        _, after = get(host, port, '/metrics', args.key)
        found = kv_pages(after)
        aborted = (counter(after, 'arbor:request_success_total{finished_reason="abort"}') -
                   counter(before, 'arbor:request_success_total{finished_reason="abort"}'))
        if (found and found[1] == 0 and aborted >= gave_up) or time.monotonic() - t2 > 10:
            break
        time.sleep(0.2)
    case('kv_pages_idle_after_timeouts', found is not None and found[1] == 0,
         '%s ten seconds after the clients gave up' % (found,))
    dropped = (counter(after, 'arbor:client_disconnects_total') -
               counter(before, 'arbor:client_disconnects_total'))
    case('timeouts_counted_as_disconnects_and_aborts', dropped >= gave_up and aborted >= gave_up,
         'arbor:client_disconnects_total +%g, request_success_total{abort} +%g, want >= %d each' % (
             dropped, aborted, gave_up))


def raise_descriptor_limit(want):
    """Raises the soft RLIMIT_NOFILE towards `want` (up to the hard limit); returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def idle_flood_phase(args, host, port, case):
    """Issue 9: idle connections must not starve anyone. `args.idle` connections are held open,
    half silent and half having sent `GET /health HTTP/1.1\\r\\n` and nothing more, while
    `args.idle_streams` streaming completions run at once. Every stream gets 200 and a complete
    stream, /health answers while they are held, and afterwards none of the idle connections has
    been closed or answered (they were not what made room)."""
    need = args.idle + args.idle_streams + 64
    limit = raise_descriptor_limit(need)
    if limit != resource.RLIM_INFINITY and limit < need:
        case('idle_flood_descriptors', False,
             'RLIMIT_NOFILE allows %d descriptors, the phase needs %d (raise the hard limit)' % (limit, need))
        return
    idle = []
    t0 = time.monotonic()
    try:
        for i in range(args.idle):
            s = socket.create_connection((host, port), timeout=10)
            if i % 2 == 1:
                s.sendall(b'GET /health HTTP/1.1\r\n')  # a head begun, never ended
            idle.append(s)
    except OSError as e:
        case('idle_connections_opened', False, 'connection %d of %d: %s' % (len(idle), args.idle, e))
        for s in idle:
            s.close()
        return
    opened = time.monotonic() - t0
    case('idle_connections_opened', True)
    try:
        t1 = time.monotonic()
        st, body = get(host, port, '/health', args.key, timeout=5)
        case('health_beside_idle_connections', st == 200 and time.monotonic() - t1 < 5,
             'GET /health -> %s in %.2f s: %s' % (st, time.monotonic() - t1, body[:200]))
    except OSError as e:
        case('health_beside_idle_connections', False, 'GET /health: %s' % e)

    results = [Result(100000 + i, False, args.idle_max_tokens) for i in range(args.idle_streams)]
    barrier = threading.Barrier(len(results))
    threads = [threading.Thread(target=client, args=(args, host, port, r, barrier), daemon=True) for r in results]
    t2 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, args.deadline - (time.monotonic() - t2)))
    wall = time.monotonic() - t2
    stuck = [r.idx for r, t in zip(results, threads) if t.is_alive()]
    refused = [r for r in results if r.status != 200]
    case('idle_flood_streams_all_200', not stuck and not refused,
         '%d still running after %.1f s, %d not 200; first: %s' % (
             len(stuck), wall, len(refused),
             ('status %s %s' % (refused[0].status, '; '.join(refused[0].problems)[:300])) if refused else '-'))
    bad = [r for r in results if r.status == 200 and (r.problems or not r.done)]
    case('idle_flood_streams_complete', not bad,
         '%d of %d streams broken; e.g. %s' % (len(bad), len(results), ' | '.join(
             'client %d: %s' % (r.idx, '; '.join(r.problems)[:200]) for r in bad[:3])) if bad else '')

    # The idle connections are all still open, and nothing was sent on them: neither closed to
    # make room nor refused.
    touched = []
    for i, s in enumerate(idle):
        s.setblocking(False)
        try:
            data = s.recv(256)
            touched.append((i, 'closed' if not data else 'answered %r' % data[:40]))
        except BlockingIOError:
            pass
        except OSError as e:
            touched.append((i, str(e)))
    case('idle_connections_kept', not touched,
         '%d of %d idle connections were closed or answered; e.g. %s' % (len(touched), len(idle), touched[:3]))
    try:
        st, body = get(host, port, '/health', args.key, timeout=5)
        case('health_after_idle_flood', st == 200, 'GET /health -> %s %s' % (st, body[:200]))
    except OSError as e:
        case('health_after_idle_flood', False, 'GET /health: %s' % e)
    for s in idle:
        s.close()
    print('# %d idle connections opened in %.1f s; beside them %d streams (max_tokens %d) ended in %.1f s, '
          '%d with 200 and a complete stream' % (
              len(idle), opened, len(results), args.idle_max_tokens, wall,
              sum(1 for r in results if r.status == 200 and r.done and not r.problems)), file=sys.stderr)


def kv_pages(metrics_text):
    """(gauge name, value) of the first KV-pages gauge found, or None."""
    for line in metrics_text.splitlines():
        if line.startswith('#'):
            continue
        for rx, name in KV_GAUGES:
            m = rx.match(line.strip())
            if m:
                return name, float(m.group(1))
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--url', default='http://127.0.0.1:8000')
    ap.add_argument('--key', default='')
    ap.add_argument('--model', default='tiny')
    ap.add_argument('--clients', type=int, default=200)
    ap.add_argument('--disconnect', type=float, default=0.3, help='fraction of clients that hang up mid-stream')
    ap.add_argument('--min-tokens', type=int, default=64)
    ap.add_argument('--max-tokens', type=int, default=256)
    ap.add_argument('--deadline', type=float, default=60.0, help='seconds the whole load may take')
    ap.add_argument('--seed', type=int, default=20261127)
    ap.add_argument('--idle', type=int, default=5000, help='idle connections held in the last phase')
    ap.add_argument('--idle-streams', type=int, default=300, help='streams beside the idle connections')
    ap.add_argument('--idle-max-tokens', type=int, default=16)
    args = ap.parse_args()

    u = urllib.parse.urlparse(args.url)
    host, port = u.hostname, u.port or 80
    if u.scheme != 'http' or host not in ('127.0.0.1', 'localhost', '::1'):
        print('load_test.py: --url must be a loopback http URL, got %s' % args.url, file=sys.stderr)
        return 2

    passed, failed = 0, 0

    def case(name, ok, why=''):
        nonlocal passed, failed
        if ok:
            passed += 1
        else:
            failed += 1
            print('FAIL %s: %s' % (name, why))

    rng = random.Random(args.seed)
    hang_up = set(rng.sample(range(args.clients), round(args.clients * args.disconnect)))
    results = [Result(i, i in hang_up, rng.randint(args.min_tokens, args.max_tokens)) for i in range(args.clients)]

    try:
        st, metrics_before = get(host, port, '/metrics', args.key)
    except OSError:
        st, metrics_before = None, ''
    aborts_before = {}
    for line in metrics_before.splitlines():
        m = ABORT_COUNTER.match(line.strip())
        if m:
            aborts_before[m.group(1) + (m.group(2) or '')] = float(m.group(3))

    barrier = threading.Barrier(args.clients)
    threads = [threading.Thread(target=client, args=(args, host, port, r, barrier), daemon=True) for r in results]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, args.deadline - (time.monotonic() - t0)))
    wall = time.monotonic() - t0
    stuck = [r.idx for r, t in zip(results, threads) if t.is_alive()]

    case('load_within_deadline', not stuck and wall < args.deadline,
         '%d clients still running after %.1f s (deadline %.0f s): %s' % (len(stuck), wall, args.deadline, stuck[:10]))
    not_admitted = [r for r in results if r.status != 200]
    case('all_clients_admitted', not not_admitted,
         '%d of %d clients did not get 200; first: client %d status %s %s' % (
             len(not_admitted), args.clients, not_admitted[0].idx, not_admitted[0].status,
             '; '.join(not_admitted[0].problems)[:300]) if not_admitted else '')
    # Were the streams really served at the same time? Peak overlap of [first event, end].
    marks = []
    for r in results:
        if r.first_event is not None and r.last_event is not None:
            marks += [(r.first_event, 1), (r.last_event, -1)]
    peak = cur = 0
    for _, d in sorted(marks, key=lambda m: (m[0], -m[1])):
        cur += d
        peak = max(peak, cur)
    want = args.clients // 2
    firsts = sorted(r.first_event - t0 for r in results if r.first_event is not None)
    case('streams_served_concurrently', peak >= want,
         'at most %d of %d streams were live at once (want >= %d); first events arrived from %.2f s to %.2f s' % (
             peak, args.clients, want, firsts[0] if firsts else -1, firsts[-1] if firsts else -1))
    stayers = [r for r in results if not r.disconnect]
    bad = [r for r in stayers if r.problems or not r.done]
    case('connected_clients_get_complete_streams', not bad,
         '%d of %d connected clients got a broken stream; e.g. %s' % (
             len(bad), len(stayers),
             ' | '.join('client %d: %s' % (r.idx, '; '.join(r.problems)[:200]) for r in bad[:3])) if bad else '')
    leavers = [r for r in results if r.disconnect]
    early = [r for r in results if r.finished_early]
    bad = [r for r in leavers if r.problems]
    case('disconnecting_clients_left_mid_stream', not bad,
         '%d of %d: %s' % (len(bad), len(leavers), ' | '.join(
             'client %d: %s' % (r.idx, '; '.join(r.problems)[:200]) for r in bad[:3])) if bad else '')

    # The server is healthy and answers a new request within 5 s.
    try:
        st, body = get(host, port, '/health', args.key)
        case('health_after_load', st == 200, 'GET /health -> %s %s' % (st, body[:200]))
    except OSError as e:
        case('health_after_load', False, 'GET /health: %s' % e)
    t1 = time.monotonic()
    try:
        st, body = post(host, port, '/v1/completions',
                        {'model': args.model, 'prompt': 'after the storm', 'max_tokens': 8}, args.key, timeout=5)
        dt = time.monotonic() - t1
        case('new_request_within_5s_after_load', st == 200 and dt < 5.0,
             'status %s in %.2f s: %s' % (st, dt, body[:200]))
    except (OSError, http.client.HTTPException) as e:
        case('new_request_within_5s_after_load', False, '%s: %s' % (type(e).__name__, e))

    # No KV pages in use once everything has finished or been aborted (poll up to 10 s).
    found, last, metrics = None, None, ''
    t2 = time.monotonic()
    while True:
        try:
            st, metrics = get(host, port, '/metrics', args.key)
        except OSError as e:
            st, metrics = None, str(e)
        found = kv_pages(metrics) if st == 200 else None
        if found is None or found[1] == 0 or time.monotonic() - t2 > 10:
            break
        last = found
        time.sleep(0.2)
    case('metrics_endpoint', st == 200, 'GET /metrics -> %s %s' % (st, metrics[:200]))
    if found is None:
        names = sorted({re.split(r'[{\s]', l, 1)[0] for l in metrics.splitlines()
                        if l.strip() and not l.startswith('#')}) if st == 200 else []
        case('kv_pages_idle_after_load', False,
             'no KV-pages gauge in /metrics (looked for %s); arbor metrics present: %s' % (
                 ', '.join(n for _, n in KV_GAUGES), ', '.join(names[:30]) or 'none'))
    else:
        case('kv_pages_idle_after_load', found[1] == 0,
             '%s = %g ten seconds after the load ended' % (found[0], found[1]))

    # Disconnects are counted (spec case 12: a dropped/abort counter is incremented).
    aborts_after = {}
    for line in (metrics if st == 200 else '').splitlines():
        m = ABORT_COUNTER.match(line.strip())
        if m:
            aborts_after[m.group(1) + (m.group(2) or '')] = float(m.group(3))
    grew = {k: v - aborts_before.get(k, 0.0) for k, v in aborts_after.items() if v > aborts_before.get(k, 0.0)}
    case('disconnects_counted_in_metrics', bool(grew),
         'no arbor metric named like *abort*/*dropped*/*disconnect* grew (present: %s)' % (
             ', '.join(sorted(aborts_after)) or 'none'))

    impatient_phase(args, host, port, case)
    idle_flood_phase(args, host, port, case)

    print('# %d clients (%d hung up mid-stream, %d meant to but got the whole stream first) in %.1f s; '
          'peak %d streams live at once' % (args.clients, len(leavers), len(early), wall, peak), file=sys.stderr)
    print('arbor-tests: %d passed, %d failed, 0 skipped' % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == '__main__':
    sys.exit(main())
