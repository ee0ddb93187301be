#!/usr/bin/env bash
# Makes sure RabbitMQ (127.0.0.1:5672) and Mosquitto (127.0.0.1:1883) are up for the
# integration tests; starts whichever is down and waits until it answers.
set -euo pipefail
say() { printf 'brokers: %s\n' "$*"; }
up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if up 5672; then
  say "RabbitMQ is up"
else
  say "starting RabbitMQ"
  rabbitmq-server -detached >/dev/null 2>&1 || true
  timeout 120 rabbitmqctl await_startup >/dev/null 2>&1 || true
  for _ in $(seq 1 60); do up 5672 && break; sleep 1; done
  up 5672 || { say "RabbitMQ did not come up on 127.0.0.1:5672" >&2; exit 1; }
  say "RabbitMQ started"
fi
# A previous test run may have left the app stopped (stop_app during a restart test).
rabbitmqctl status >/dev/null 2>&1 && { rabbitmqctl start_app >/dev/null 2>&1 || true; }

if up 1883; then
  say "Mosquitto is up"
else
  say "starting Mosquitto"
  conf=/etc/mosquitto/mosquitto.conf
  if [ -f "$conf" ]; then mosquitto -d -c "$conf"; else mosquitto -d -p 1883; fi
  for _ in $(seq 1 20); do up 1883 && break; sleep 0.5; done
  up 1883 || { say "Mosquitto did not come up on 127.0.0.1:1883" >&2; exit 1; }
  say "Mosquitto started"
fi
