# RabbitMQ users of DanceMoE.Bus, one per role, and the resources each may configure, write and read.
# Sourced by scripts/services.sh and compose/rabbitmq/start-with-policies.sh, which define `rabbitmqctl`.
#
# The names MassTransit uses: an endpoint's queue and its exchange share a name (edge-1, edge-1-experts, edge-1-control,
# coordinator-heartbeats); faulted and set-aside messages go to NAME_error and NAME_skipped; every process has a temporary
# bus endpoint HOST_PROCESS_bus_ID (where its replies arrive); each message type has an exchange DanceMoE.Contracts:TYPE
# and each fault one MassTransit:Fault--DanceMoE.Contracts:TYPE-- (MassTransit:ReceiveFault for a body that is no message).
# A permission regex covers queues and exchanges alike.
#
#   client       sends GenerateText (and CancelGeneration) to edge request queues (edge-N), reads its replies on its bus endpoint
#   edge         its own queues, peers' experts queues, the expert lane (exchange expert-lane, queues expert-lane.EDGE and
#                expert-lane.EDGE.replies), heartbeats and PlacementApplied, replies to clients and the saga
#   coordinator  its queues, edges' control queues, placement and migration messages; never heartbeats or requests
#   ops          the management API (tag monitoring) and `placement run-now` (queue coordinator)
#   admin        the bootstrap credential (tag administrator): virtual hosts, users, tests and benchmarks
RABBITMQ_ROLES="client edge coordinator ops admin"

rabbitmq_role_user() { echo "dancemoe-$1"; }

rabbitmq_role_tags() {
  case "$1" in
    ops) echo monitoring ;;
    admin) echo administrator ;;
    *) echo "" ;;
  esac
}

# Prints the role's configure, write and read regexes, one a line.
rabbitmq_role_permissions() {
  local bus='[A-Za-z0-9._-]+_bus_[a-z0-9]+'
  local requests='edge-(?![a-z0-9-]*-(experts|control)$)[a-z0-9-]+'
  local edge_queues='edge-[a-z0-9-]+(_error|_skipped)?'
  local control='edge-[a-z0-9-]+-control'
  local lane='expert-lane(\.edge-[a-z0-9-]+(\.replies)?)?'
  local coordinator='coordinator(-[a-z]+)*(_error|_skipped)?'
  # A body that is no message: the receive endpoint publishes a ReceiveFault and moves it to NAME_error. Refused that
  # publish, its channel closed and the message came back, again and again, with the consumer stopped.
  local fault='MassTransit:(Receive)?Fault(--.+--)?'
  local c='DanceMoE\.Contracts'
  case "$1" in
    client)
      # Reads its own endpoint only: read on an edge's exchange let it bind a queue of its own there and copy every
      # client's requests (it sends to the exchange, which needs configure and write, never read).
      printf '%s\n' "^($requests|$bus)\$" "^($requests|$bus)\$" "^($bus)\$" ;;
    edge)
      printf '%s\n' \
        "^($edge_queues|$lane|$bus|coordinator-migrations|$c:(GenerateText|CancelGeneration|RunExpertBatch|LoadExpert|UnloadExpert|PlacementActivated|EdgeHeartbeat|PlacementApplied)|$fault)\$" \
        "^($edge_queues|$lane|$bus|coordinator-migrations|$c:(EdgeHeartbeat|PlacementApplied)|$fault)\$" \
        "^($edge_queues|$lane|$bus|$c:(GenerateText|CancelGeneration|RunExpertBatch|LoadExpert|UnloadExpert|PlacementActivated)|$fault)\$" ;;
    coordinator)
      printf '%s\n' \
        "^($coordinator|$bus|$control|$c:.+|$fault)\$" \
        "^($coordinator|$bus|$control|$c:(?!(EdgeHeartbeat|PlacementApplied|GenerateText|CancelGeneration|RunExpertBatch)\$).+|$fault)\$" \
        "^($coordinator|$bus|$control|$c:.+|$fault)\$" ;;
    ops)
      printf '%s\n' "^(coordinator|$bus)\$" "^(coordinator|$bus)\$" "^(coordinator|$bus)\$" ;;
    admin)
      printf '%s\n' '.*' '.*' '.*' ;;
    *) return 1 ;;
  esac
}

# rabbitmq_apply_role VHOST ROLE PASSWORD: creates or updates the role's user, its tags and its permissions on VHOST.
rabbitmq_apply_role() {
  local vhost="$1" role="$2" password="$3" user perms
  user=$(rabbitmq_role_user "$role")
  if rabbitmqctl list_users -q 2>/dev/null | awk '{print $1}' | grep -qx "$user"; then
    rabbitmqctl change_password "$user" "$password" >/dev/null
  else
    rabbitmqctl add_user "$user" "$password" >/dev/null
  fi
  # shellcheck disable=SC2046 # no tags is no argument
  rabbitmqctl set_user_tags "$user" $(rabbitmq_role_tags "$role") >/dev/null
  mapfile -t perms < <(rabbitmq_role_permissions "$role")
  rabbitmqctl set_permissions -p "$vhost" "$user" "${perms[0]}" "${perms[1]}" "${perms[2]}" >/dev/null
}
