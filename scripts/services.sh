#!/usr/bin/env bash
# Starts the services the cluster tests need (PostgreSQL on 127.0.0.1:5432 and Redis on
# 127.0.0.1:6379) when they are down; does nothing when they answer.
set -euo pipefail

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; }

if ! pg_up && command -v pg_ctlcluster >/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi
if ! redis_up && command -v redis-server >/dev/null; then
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
fi
for _ in $(seq 50); do
  pg_up && redis_up && exit 0
  sleep 0.2
done
pg_up || echo "PostgreSQL is not answering on 127.0.0.1:5432: its tests will fail" >&2
redis_up || echo "Redis is not answering on 127.0.0.1:6379: its tests will fail" >&2
