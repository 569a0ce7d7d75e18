#!/usr/bin/env bash
# Starts the local PostgreSQL and NATS (JetStream) the tests use, if they are installed and
# not already running. Safe to run again; stops nothing.
set -uo pipefail

if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
  if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  fi
fi
if [ -x /usr/sbin/nats-server ]; then
  if ! (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null; then
    mkdir -p /var/lib/nats-server
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
      -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server || true
  fi
fi
for _ in $(seq 1 30); do
  pg_ok=1; nats_ok=1
  command -v pg_isready >/dev/null 2>&1 && ! pg_isready -h 127.0.0.1 -p 5432 -q && pg_ok=0
  [ -x /usr/sbin/nats-server ] && ! (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null && nats_ok=0
  [ $pg_ok = 1 ] && [ $nats_ok = 1 ] && exit 0
  sleep 1
done
echo "services.sh: PostgreSQL or NATS did not come up; storage/cluster tests will fail" >&2
exit 0
