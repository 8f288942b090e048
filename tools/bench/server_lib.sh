# The bundled server's lifecycle for the serving suites (tools/bench/serve_suite.sh,
# tools/bench/lora_suite.sh), sourced by them. The caller sets `suite` (its name, for messages)
# and `out` (where server.log is), starts the server in the background and sets server_pid.

http_get() {  # http_get URL [FILE]: prints the status code (000 when unreachable)
  python3 - "$@" <<'PY'
import sys, urllib.request, urllib.error
try:
    with urllib.request.urlopen(sys.argv[1], timeout=10) as r:
        body, code = r.read(), r.status
except urllib.error.HTTPError as e:
    body, code = e.read(), e.code
except Exception:
    body, code = b'', 0
if len(sys.argv) > 2:
    open(sys.argv[2], 'wb').write(body)
print('%03d' % code)
PY
}

free_port() {  # a TCP port free on 127.0.0.1 now
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

server_pid=
stop_server() {  # SIGTERM, then SIGKILL after 60 s
  [ -n "$server_pid" ] || return 0
  kill -TERM "$server_pid" 2>/dev/null
  for _ in $(seq 600); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$server_pid" 2>/dev/null; then
    echo "$suite: the server ignored SIGTERM for 60 s; killing it"
    kill -KILL "$server_pid" 2>/dev/null
  fi
  wait "$server_pid" 2>/dev/null
  server_pid=
}

# wait_healthy URL GIVE_UP: polls URL/health until it answers 200. Exits the suite (1, with the
# server log's tail) when the server dies first, or when the command GIVE_UP succeeds (out of
# time; the message names GIVE_UP).
wait_healthy() {
  until [ "$(http_get "$1/health")" = 200 ]; do
    if ! kill -0 "$server_pid" 2>/dev/null; then
      wait "$server_pid" 2>/dev/null
      server_pid=
      echo "$suite: the server exited during start-up:"
      tail -5 "$out/server.log"
      exit 1
    fi
    if $2; then
      echo "$suite: the server was not healthy in time ($2)"
      tail -5 "$out/server.log"
      exit 1
    fi
    sleep 0.5
  done
}
