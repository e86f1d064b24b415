#!/usr/bin/env bash
# Starts RabbitMQ and, once it runs, bounds the dead-letter queues with the operator policy scripts/services.sh sets:
# a week, 10,000 messages or 256 MiB per _error or _skipped queue, the oldest dropped first. It also makes the users of
# the roles (scripts/rabbitmq-users.sh) with the passwords compose passes from the environment; the image made the admin.
set -euo pipefail
for variable in DANCEMOE_RABBITMQ_ADMIN_PASSWORD DANCEMOE_RABBITMQ_CLIENT_PASSWORD DANCEMOE_RABBITMQ_EDGE_PASSWORD \
                DANCEMOE_RABBITMQ_COORDINATOR_PASSWORD DANCEMOE_RABBITMQ_OPS_PASSWORD; do
  value="${!variable:-}"
  [ "$variable" = DANCEMOE_RABBITMQ_ADMIN_PASSWORD ] && value="${RABBITMQ_DEFAULT_PASS:-}"
  if [ -z "$value" ]; then
    echo "rabbitmq: $variable is not set: compose passes every role's password from the environment and has no default" >&2
    exit 1
  fi
done
# shellcheck source=../../scripts/rabbitmq-users.sh
. /etc/rabbitmq/rabbitmq-users.sh
(
  until rabbitmqctl -q await_startup --timeout 5 >/dev/null 2>&1; do sleep 2; done
  for role in client edge coordinator ops; do
    variable="DANCEMOE_RABBITMQ_${role^^}_PASSWORD"
    rabbitmq_apply_role dancemoe "$role" "${!variable:?$variable is not set}"
  done
  rabbitmqctl set_operator_policy -p dancemoe --apply-to queues dancemoe-dead-letters '_(error|skipped)$' \
    '{"message-ttl":604800000,"max-length":10000,"max-length-bytes":268435456}'
) &
exec docker-entrypoint.sh rabbitmq-server
