#!/usr/bin/env python3
"""SIGTERM with a drain timeout (robustness case 16), against the real binary.

  drain_test.py ARBOR_BINARY

With server.drain_timeout_s=10: a stream in flight when SIGTERM arrives completes normally
(finish_reason length, then [DONE]); meanwhile /health and new requests get 503; the process
exits 0 soon after. With drain_timeout_s=0: the stream in flight ends with finish_reason
"abort" and [DONE], and the process exits 0 within 4 s. Loopback only, bounded in time.
"""
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

PASSED, FAILED = 0, 0


def check(name, ok, detail=""):
    global PASSED, FAILED
    if ok:
        PASSED += 1
    else:
        FAILED += 1
        print(f"FAIL {name}: {detail}")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start(binary, drain):
    port = free_port()
    proc = subprocess.Popen(
        [binary, "serve", "--port", str(port), "--grpc-port", "0",
         "--device", os.environ.get("ARBOR_E2E_DEVICE", "cpu"),
         "--set", f"server.drain_timeout_s={drain}", "--log-level", "warn",
         "--set", "model.path=" + os.environ.get("ARBOR_E2E_MODEL", "models/tiny")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return proc, port
        except OSError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("server did not become healthy")


def post(port, body, timeout=10):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    return c.getresponse()


def stream_until_done(port, result, first_chunk):
    """Reads a long stream; records the last finish_reason and whether [DONE] came."""
    res = post(port, {"model": "tiny", "prompt": "x", "max_tokens": 1500, "ignore_eos": True,
                      "stream": True}, timeout=30)
    result["status"] = res.status
    buf = b""
    while True:
        chunk = res.read1(65536) if hasattr(res, "read1") else res.read(1024)
        if not chunk:
            break
        buf += chunk
        first_chunk.set()
        while b"\n\n" in buf:
            event, buf = buf.split(b"\n\n", 1)
            data = event.decode("utf-8", "replace")[len("data: "):]
            if data == "[DONE]":
                result["done"] = True
                continue
            for choice in json.loads(data).get("choices", []):
                if choice.get("finish_reason"):
                    result["finish"] = choice["finish_reason"]
    first_chunk.set()


def run(binary, drain):
    proc, port = start(binary, drain)
    result, first = {}, threading.Event()
    t = threading.Thread(target=stream_until_done, args=(port, result, first))
    t.start()
    first.wait(10)
    signaled = time.time()
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.1)
    if drain > 0:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/health")
            check(f"drain{drain}_health_503", c.getresponse().status == 503)
            res = post(port, {"model": "tiny", "prompt": "x", "max_tokens": 2})
            check(f"drain{drain}_new_request_503", res.status == 503, f"got {res.status}")
        except OSError as e:
            check(f"drain{drain}_server_reachable_while_draining", False, repr(e))
    t.join(30)
    try:
        rc = proc.wait(drain + 10)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = None
    elapsed = time.time() - signaled
    check(f"drain{drain}_exit_0", rc == 0, f"exit code {rc}")
    check(f"drain{drain}_stream_done", result.get("done") is True, str(result))
    want = "length" if drain > 0 else "abort"
    check(f"drain{drain}_finish_{want}", result.get("finish") == want, str(result))
    limit = drain + 3 if drain > 0 else 4
    check(f"drain{drain}_exit_within_{limit}s", elapsed < limit, f"{elapsed:.2f} s")


def main():
    binary = sys.argv[1]
    run(binary, 10)
    run(binary, 0)
    print(f"arbor-tests: {PASSED} passed, {FAILED} failed, 0 skipped")
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
