#!/usr/bin/env bash
# Real programs under LD_PRELOAD=libbitslab.so must behave exactly as without
# it: same output, same files. Usage: programs.sh path/to/libbitslab.so
# Servers (redis, memcached) are tested only if installed; they listen on
# 127.0.0.1 only, get a bounded load, and are stopped by PID.
set -uo pipefail
LIB=$(readlink -f "$1")
[ -f "$LIB" ] || { echo "no library at $1"; exit 2; }
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done; rm -rf "$WORK"; }
trap cleanup EXIT
pass=0; fail=0; skip=0
ok() { echo "ok: $1"; pass=$((pass + 1)); }
bad() { echo "FAIL: $1"; fail=$((fail + 1)); }
skipped() { echo "skip: $1"; skip=$((skip + 1)); }
pre() { LD_PRELOAD="$LIB" BITSLAB_TEST_PRELOADED=1 "$@"; }

# The preload must really be in effect: a preloaded process maps the library.
if pre grep -q libbitslab /proc/self/maps; then ok "library is preloaded"; else bad "library is preloaded"; fi

# ---- python3: dicts, strings, json, threads, gc --------------------------------
cat > "$WORK/work.py" <<'PY'
import json, threading, hashlib, gc, random
random.seed(7)
def work(n, out, i):
    d = {}
    for k in range(n):
        d["k%d" % k] = [k, str(k) * (k % 13), {"x": k * 1.5}]
        if k % 3 == 0:
            d.pop("k%d" % (k // 2), None)
    out[i] = hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()
out = [None] * 8
ts = [threading.Thread(target=work, args=(20000 + i * 1000, out, i)) for i in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
big = [bytearray(random.randrange(1, 3 << 20)) for _ in range(20)]   # huge blocks
del big; gc.collect()
print("\n".join(out))
print(sum(len(str(x)) for x in range(300000)))
PY
a=$(python3 "$WORK/work.py" 2>&1); b=$(pre python3 "$WORK/work.py" 2>&1)
if [ -n "$a" ] && [ "$a" = "$b" ]; then ok "python3 workload: same output"; else bad "python3 workload"; echo "$b" | tail -5; fi

# ---- sqlite3 ---------------------------------------------------------------------
if command -v sqlite3 >/dev/null; then
    cat > "$WORK/script.sql" <<'SQL'
CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, v REAL);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 50000)
INSERT INTO t SELECT x, printf('name-%08d-%s', x, hex(x * 7919)), x * 0.5 FROM c;
CREATE INDEX t_name ON t(name);
SELECT count(*), sum(v), min(name), max(name) FROM t;
SELECT group_concat(id) FROM (SELECT id FROM t WHERE id % 4999 = 0 ORDER BY name DESC);
UPDATE t SET name = name || '-x' WHERE id % 7 = 0;
DELETE FROM t WHERE id % 11 = 0;
SELECT count(*), length(group_concat(name)) FROM t;
VACUUM;
PRAGMA integrity_check;
SQL
    a=$(sqlite3 "$WORK/a.db" < "$WORK/script.sql" 2>&1); b=$(pre sqlite3 "$WORK/b.db" < "$WORK/script.sql" 2>&1)
    if [ -n "$a" ] && [ "$a" = "$b" ]; then ok "sqlite3 script: same output"; else bad "sqlite3 script"; echo "$b" | tail -5; fi
else skipped "sqlite3 not installed"; fi

# ---- gcc: the compiler's output must be byte-identical ---------------------------
if command -v gcc >/dev/null; then
    SRC=$(dirname "$(readlink -f "$0")")/../../src/heap.c
    INC="-I$(dirname "$SRC") -I$(dirname "$SRC")/../include"
    gcc -O2 -D_GNU_SOURCE -std=c11 $INC -c "$SRC" -o "$WORK/a.o" 2>"$WORK/a.err"; ra=$?
    pre gcc -O2 -D_GNU_SOURCE -std=c11 $INC -c "$SRC" -o "$WORK/b.o" 2>"$WORK/b.err"; rb=$?
    if [ $ra -eq 0 ] && [ $rb -eq 0 ] && cmp -s "$WORK/a.o" "$WORK/b.o"; then ok "gcc -O2 compile: identical object"; else bad "gcc compile ($ra/$rb)"; cat "$WORK/b.err" | tail -5; fi
else skipped "gcc not installed"; fi

# ---- git: build a repository, the hashes must match -------------------------------
if command -v git >/dev/null; then
    gitrun() {
        local dir=$1; shift
        mkdir -p "$dir" && cd "$dir" || return 1
        "$@" git init -q . && "$@" git config user.email t@example.invalid && "$@" git config user.name t
        for i in $(seq 1 40); do seq 1 $((i * 50)) > "f$i.txt"; done
        "$@" git add -A && GIT_AUTHOR_DATE=2000-01-01T00:00:00 GIT_COMMITTER_DATE=2000-01-01T00:00:00 "$@" git commit -qm one
        for i in $(seq 1 40 | awk 'NR % 3 == 0'); do echo change >> "f$i.txt"; done
        "$@" git add -A && GIT_AUTHOR_DATE=2000-01-02T00:00:00 GIT_COMMITTER_DATE=2000-01-02T00:00:00 "$@" git commit -qm two
        "$@" git gc -q && "$@" git fsck --strict 2>&1 && "$@" git log --stat --format=%H%n%T | md5sum
        cd - >/dev/null
    }
    a=$(gitrun "$WORK/ga" env); b=$(gitrun "$WORK/gb" env LD_PRELOAD="$LIB")
    if [ -n "$a" ] && [ "$a" = "$b" ]; then ok "git init/commit/gc/fsck/log: same hashes"; else bad "git"; echo "$a"; echo "$b"; fi
else skipped "git not installed"; fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_port() { for _ in $(seq 1 100); do python3 -c "import socket,sys; s=socket.socket(); s.settimeout(0.2); sys.exit(s.connect_ex(('127.0.0.1',$1)))" && return 0; sleep 0.1; done; return 1; }

# ---- redis ------------------------------------------------------------------------
if command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null && command -v redis-cli >/dev/null; then
    port=$(free_port)
    env LD_PRELOAD="$LIB" redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --daemonize no >"$WORK/redis.log" 2>&1 &
    rpid=$!; PIDS+=("$rpid")
    if wait_port "$port" && grep -q libbitslab "/proc/$rpid/maps"; then
        timeout 120 redis-benchmark -h 127.0.0.1 -p "$port" -n 20000 -c 8 -q -t set,get,lpush,lpop,incr >"$WORK/rb.txt" 2>&1
        rc=$?
        v=$(for i in $(seq 1 200); do echo "SET key:$i $(printf 'v%.0s' $(seq 1 $((i % 50 + 1))))"; done | redis-cli -h 127.0.0.1 -p "$port" >/dev/null; redis-cli -h 127.0.0.1 -p "$port" GET key:123; redis-cli -h 127.0.0.1 -p "$port" DBSIZE)
        expect="$(printf 'v%.0s' $(seq 1 24))"
        if [ $rc -eq 0 ] && [ "$(echo "$v" | head -1)" = "$expect" ] && kill -0 "$rpid" 2>/dev/null; then ok "redis-server under bitslab: benchmark + replies"; else bad "redis ($rc): $v"; tail -5 "$WORK/rb.txt" "$WORK/redis.log"; fi
    else bad "redis-server did not start under bitslab"; tail -5 "$WORK/redis.log"; fi
    kill "$rpid" 2>/dev/null; wait "$rpid" 2>/dev/null
else skipped "redis-server not installed"; fi

# ---- memcached ----------------------------------------------------------------------
if command -v memcached >/dev/null; then
    port=$(free_port)
    env LD_PRELOAD="$LIB" memcached -l 127.0.0.1 -p "$port" -U 0 -t 4 -m 64 -u "$(id -un)" >"$WORK/mc.log" 2>&1 &
    mpid=$!; PIDS+=("$mpid")
    if wait_port "$port" && grep -q libbitslab "/proc/$mpid/maps"; then
        r=$(timeout 120 python3 - "$port" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
f = s.makefile("rwb")
ok = 0
for i in range(3000):
    v = (b"x" * (i % 700 + 1))
    f.write(b"set k%d 0 0 %d\r\n%s\r\n" % (i, len(v), v)); f.flush()
    if f.readline() == b"STORED\r\n": ok += 1
good = 0
for i in range(0, 3000, 7):
    f.write(b"get k%d\r\n" % i); f.flush()
    hdr = f.readline(); data = f.readline(); end = f.readline()
    if data.rstrip(b"\r\n") == b"x" * (i % 700 + 1) and end == b"END\r\n": good += 1
print(ok, good)
PY
)
        if [ "$r" = "3000 429" ] && kill -0 "$mpid" 2>/dev/null; then ok "memcached under bitslab: 3000 sets, 429 gets checked"; else bad "memcached: '$r'"; tail -5 "$WORK/mc.log"; fi
    else bad "memcached did not start under bitslab"; tail -5 "$WORK/mc.log"; fi
    kill "$mpid" 2>/dev/null; wait "$mpid" 2>/dev/null
else skipped "memcached not installed"; fi

echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
