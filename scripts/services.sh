#!/usr/bin/env bash
# Local RabbitMQ and PostgreSQL for development and CI, without systemd or Docker.
# Usage: scripts/services.sh up [--rabbitmq-nodes N] [--rabbitmq-only]|down|status [--json]
#        scripts/services.sh node start|stop|kill I|all   (one RabbitMQ node, or every node; for the chaos benchmark)
#        scripts/services.sh postgres start|stop
#        scripts/services.sh pids   (the main process of each running service, one per line)
# Both run as private instances on fixed loopback ports with their data under $DANCEMOE_STATE
# (default /var/tmp/dancemoe: outside the source tree, and readable by the postgres user even
# when the checkout lives in a private temporary folder).
set -euo pipefail

STATE="${DANCEMOE_STATE:-/var/tmp/dancemoe}"
AMQP_PORT="${DANCEMOE_AMQP_PORT:-5682}"
MGMT_PORT="${DANCEMOE_RABBITMQ_MANAGEMENT_PORT:-15682}"
EPMD_PORT="${DANCEMOE_EPMD_PORT:-4382}"
PG_PORT="${DANCEMOE_POSTGRES_PORT:-5442}"

# Checked before any arithmetic: bash evaluates a word such as a[$(cmd)] in $((...)), and a port out of range reached
# RabbitMQ's and PostgreSQL's settings. Node I of N listens I-1 above the first node's ports, its distribution port
# 20000 above its AMQP one. PostgreSQL's start options split the state path on blanks.
settings_problem() {
  local name value max
  for name in DANCEMOE_AMQP_PORT:45527 DANCEMOE_RABBITMQ_MANAGEMENT_PORT:65527 DANCEMOE_EPMD_PORT:65535 DANCEMOE_POSTGRES_PORT:65535; do
    max=${name#*:}; name=${name%%:*}; value=${!name:-}
    [ -z "$value" ] && continue
    if ! [[ "$value" =~ ^[1-9][0-9]{0,4}$ ]] || [ "$value" -gt "$max" ]; then
      echo "$name '${value//[[:cntrl:]]/ }' is not a port from 1 to $max"; return
    fi
  done
  if [[ "$STATE" =~ [[:space:][:cntrl:]] ]]; then
    echo "DANCEMOE_STATE '${STATE//[[:cntrl:]]/ }' holds a blank or a control character, which PostgreSQL's start options cannot take: choose a path without"
  fi
}
SETTINGS_PROBLEM=$(settings_problem)
if [ -n "$SETTINGS_PROBLEM" ]; then echo "services: error: $SETTINGS_PROBLEM" >&2; exit 1; fi
DIST_PORT=$((AMQP_PORT + 20000))
APP_USER=dancemoe
APP_PASSWORD="${DANCEMOE_PASSWORD:-dancemoe}"
APP_VHOST=dancemoe
APP_DB=dancemoe

RABBIT_DIR="$STATE/rabbitmq"
# RabbitMQ runs as one node or as a cluster of N on loopback: node I (from 1) is dancemoe@localhost, then dancemoeI@localhost,
# with AMQP, management and distribution ports I-1 above the first node's. N is remembered from the last `up --rabbitmq-nodes`.
RABBIT_NODES_FILE="$RABBIT_DIR/nodes"
RABBIT_BIN=/usr/lib/rabbitmq/bin
PG_BIN=/usr/lib/postgresql/15/bin
PG_DIR="$STATE/postgres"
PG_DATA="$PG_DIR/data"
# The superuser's password, generated once: tests and benchmarks create their databases with it.
PG_ADMIN_PASSWORD_FILE="$PG_DIR/admin.password"
# One RabbitMQ user per role (scripts/rabbitmq-users.sh), each with a password generated once, readable by root only.
RABBIT_USERS_DIR="$RABBIT_DIR/users"
# The fingerprint of the broker's users, permissions and policy as the last setup left them.
RABBIT_SETUP_FILE="$RABBIT_DIR/setup.sha256"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/rabbitmq-users.sh
. "$SCRIPT_DIR/rabbitmq-users.sh"

log() { echo "services: $*" >&2; }
die() { echo "services: error: $*" >&2; exit 1; }

node_name() { if [ "$1" = 1 ]; then echo "dancemoe@localhost"; else echo "dancemoe$1@localhost"; fi; }
node_dir() { if [ "$1" = 1 ]; then echo "$RABBIT_DIR"; else echo "$RABBIT_DIR/node$1"; fi; }
node_amqp_port() { echo $((AMQP_PORT + $1 - 1)); }
node_mgmt_port() { echo $((MGMT_PORT + $1 - 1)); }
node_dist_port() { echo $((DIST_PORT + $1 - 1)); }
rabbit_nodes() { if [ -s "$RABBIT_NODES_FILE" ]; then cat "$RABBIT_NODES_FILE"; else echo 1; fi; }

# Erlang schedulers of each RabbitMQ node: half the cores, at least one. The broker shares this machine with the edges,
# PostgreSQL and the clients; on 2 cores one scheduler spent about a third less CPU per token than two at 16 concurrent
# requests (`bench load`, README "Benchmarks").
HALF_CORES=$(( $(nproc) / 2 ))
RABBIT_SCHEDULERS="${DANCEMOE_RABBITMQ_SCHEDULERS:-$(( HALF_CORES > 1 ? HALF_CORES : 1 ))}"

# Every node shares HOME (so one Erlang cookie) and epmd; each has its own ports, data and logs.
rabbit_env() {
  local i="$1"; shift
  local dir; dir=$(node_dir "$i")
  # epmd and the node's distribution port (what rabbitmqctl and cluster peers use) listen on loopback only, as AMQP does.
  env HOME="$RABBIT_DIR" ERL_EPMD_PORT="$EPMD_PORT" ERL_EPMD_ADDRESS=127.0.0.1 \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1} +S $RABBIT_SCHEDULERS:$RABBIT_SCHEDULERS" \
    RABBITMQ_NODENAME="$(node_name "$i")" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT="$(node_amqp_port "$i")" RABBITMQ_DIST_PORT="$(node_dist_port "$i")" \
    RABBITMQ_MNESIA_BASE="$dir/mnesia" RABBITMQ_LOG_BASE="$dir/log" \
    RABBITMQ_PID_FILE="$dir/rabbitmq.pid" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$RABBIT_DIR/enabled_plugins" \
    RABBITMQ_CONFIG_FILE="$dir/rabbitmq" \
    RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf" \
    "$@"
}
node_ctl() { local i="$1"; shift; rabbit_env "$i" "$RABBIT_BIN/rabbitmqctl" -n "$(node_name "$i")" "$@"; }
rabbitmqctl() { node_ctl 1 "$@"; }
pg() { runuser -u postgres -- "$@"; }
psql_admin() {
  PGPASSWORD="$(cat "$PG_ADMIN_PASSWORD_FILE")" pg psql -h "$PG_DIR" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA "$@"
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pid_alive() { [ -f "$1" ] && kill -0 "$(head -n1 "$1")" 2>/dev/null; }
node_running() { pid_alive "$(node_dir "$1")/rabbitmq.pid"; }

# The Erlang VMs of node $1 of this state folder, found by the pid file named in their environment: a VM still booting
# (not yet registered with epmd, no port open) or one whose start failed halfway has not written the file.
node_vm_pids() {
  local want p vars; want="RABBITMQ_PID_FILE=$(node_dir "$1")/rabbitmq.pid"
  for p in $(pgrep -x beam.smp 2>/dev/null || true); do
    vars=$(tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null) || continue
    if grep -qxF "$want" <<<"$vars"; then echo "$p"; fi
  done
}
rabbit_running() { node_running 1; }
# Every running RabbitMQ node's VM, then PostgreSQL's postmaster, one pid per line.
service_pids() {
  local i
  for i in $(seq 1 "$(rabbit_nodes)"); do
    # RabbitMQ writes its pid file without a line feed.
    if node_running "$i"; then echo "$(head -n1 "$(node_dir "$i")/rabbitmq.pid")"; fi
  done
  if pid_alive "$PG_DATA/postmaster.pid"; then echo "$(head -n1 "$PG_DATA/postmaster.pid")"; fi
}
pg_running() { [ -f "$PG_DATA/postmaster.pid" ] && pg "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; }

apt_install() {
  command -v apt-get >/dev/null || die "apt-get is not available: install $* by hand"
  log "installing $* from Debian's packages"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"; } >"$STATE/apt.log" 2>&1; then
    die "apt-get install $* failed (see $STATE/apt.log): $(tail -n 1 "$STATE/apt.log")"
  fi
}

ensure_installed() {
  [ "$(id -u)" = 0 ] || die "run as root (installs packages and starts PostgreSQL as the postgres user)"
  local missing=()
  [ -x "$RABBIT_BIN/rabbitmq-server" ] || missing+=(rabbitmq-server)
  [ -x "$PG_BIN/initdb" ] || missing+=(postgresql-15)
  command -v psql >/dev/null || missing+=(postgresql-client-15)
  if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
}

# The node's AMQP, management and distribution ports.
node_ports() { echo "$(node_amqp_port "$1") $(node_mgmt_port "$1") $(node_dist_port "$1")"; }

node_start() {
  local i="$1" dir amqp mgmt p
  dir=$(node_dir "$i"); amqp=$(node_amqp_port "$i"); mgmt=$(node_mgmt_port "$i")
  if node_running "$i"; then log "RabbitMQ node $(node_name "$i") already running on 127.0.0.1:$amqp"; return; fi
  case "$RABBIT_SCHEDULERS" in
    ''|*[!0-9]*|0*) die "DANCEMOE_RABBITMQ_SCHEDULERS must be a whole number from 1, not '$RABBIT_SCHEDULERS'" ;;
  esac
  for p in $(node_ports "$i"); do
    port_in_use "$p" && die "port $p is taken by another process: stop it or set DANCEMOE_AMQP_PORT / DANCEMOE_RABBITMQ_MANAGEMENT_PORT"
  done
  mkdir -p "$dir/log" "$dir/mnesia"
  echo "[rabbitmq_management]." >"$RABBIT_DIR/enabled_plugins"
  cat >"$dir/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$amqp
management.tcp.ip = 127.0.0.1
management.tcp.port = $mgmt
loopback_users = none
# A publish larger than this is refused by the broker before it reaches a queue (an expert batch of the edges' default
# 16 MiB limit travels as about 22 MiB of JSON).
max_message_size = 67108864
CONF
  : >"$dir/rabbitmq-env.conf"
  log "starting RabbitMQ node $(node_name "$i") on 127.0.0.1:$amqp (management http://127.0.0.1:$mgmt)"
  rabbit_env "$i" "$RABBIT_BIN/rabbitmq-server" -detached >"$dir/log/start.out" 2>&1 \
    || die "rabbitmq-server failed to start: $(tail -n 3 "$dir/log/start.out")"
}

node_ports_free() {
  local p
  for p in $(node_ports "$1"); do
    port_in_use "$p" && return 1
  done
  return 0
}

# Whether the node's Erlang VM is up: registered with our epmd (it registers before RabbitMQ writes its pid file).
node_registered() { ERL_EPMD_PORT="$EPMD_PORT" epmd -names 2>/dev/null | grep -q "^name $(node_name "$1" | cut -d@ -f1) at"; }

# Awaits node $1 and keeps the nodes given after it starting: a peer that stopped while starting is started
# again here too, since the node awaited may wait for that peer's tables (the last of the cluster to stop).
node_await() {
  local i="$1" n j started=$SECONDS; shift
  for n in $(seq 1 60); do
    if node_ctl "$i" await_startup --timeout 5 >/dev/null 2>&1; then
      # A node started again after a failed start may have lost its pid file to the failed one's exit.
      node_running "$i" || node_ctl "$i" eval 'list_to_integer(os:getpid()).' >"$(node_dir "$i")/rabbitmq.pid" 2>/dev/null
      return 0
    fi
    [ "$n" = 60 ] && die "RabbitMQ node $(node_name "$i") did not start in $((SECONDS - started)) s (60 tries); see $(node_dir "$i")/log"
    # A node of a cluster that asks its peers while they are still starting may stop (incompatible_feature_flags,
    # badrpc): started again, it finds them up.
    for j in $(printf '%s\n' "$i" "$@" | awk '!seen[$0]++'); do
      # The stopped node's VM may still hold its ports while it exits: started again once they are free. A VM that
      # is still booting is not registered yet either: started twice, the second takes the ports and the first fails.
      if ! node_registered "$j" && [ -z "$(node_vm_pids "$j")" ] && node_ports_free "$j"; then
        log "RabbitMQ node $(node_name "$j") stopped while starting; starting it again"
        node_start "$j"
      fi
    done
    sleep 2
  done
}

# Nodes 2..N join node 1's cluster once (a node that already lists node 1 stays as it is).
node_join() {
  local i="$1"
  node_ctl "$i" cluster_status --formatter json 2>/dev/null | grep -q "\"$(node_name 1)\"" && return 0
  log "joining $(node_name "$i") to $(node_name 1)"
  node_ctl "$i" stop_app >/dev/null
  node_ctl "$i" join_cluster "$(node_name 1)" >/dev/null || die "$(node_name "$i") cannot join $(node_name 1); see $(node_dir "$i")/log"
  node_ctl "$i" start_app >/dev/null
}

rabbit_up() {
  local nodes="$1" i
  # Nodes of a cluster that stopped together wait for each other at start: all start first, then each is awaited.
  for i in $(seq 1 "$nodes"); do node_start "$i"; done
  for i in $(seq 1 "$nodes"); do node_await "$i" $(seq 1 "$nodes"); done
  for i in $(seq 2 "$nodes"); do node_join "$i"; done
}

rabbitmq_queues() { rabbit_env 1 "$RABBIT_BIN/rabbitmq-queues" -n "$(node_name 1)" "$@"; }

# Quorum queues are replicated on the nodes of the cluster when they are declared: those declared while it had fewer
# nodes get a member on every node now (a queue that has one there is left as it is).
rabbit_grow_queues() {
  local nodes="$1" i out
  for i in $(seq 2 "$nodes"); do
    out=$(rabbitmq_queues grow "$(node_name "$i")" all --errors-only 2>&1 </dev/null) || die "quorum queues cannot grow onto $(node_name "$i"): $out"
  done
}

# Nodes N+1..M of a cluster of M leave it: all M run first (a node started alone would wait for its peers, and its
# quorum queues would have no majority), each leaving node's queue members are removed while the others keep a
# majority, then it is forgotten, stopped and its data deleted. Node 1 keeps every queue and message.
rabbit_shrink() {
  local from="$1" to="$2" i out
  log "shrinking the RabbitMQ cluster from $from to $to node(s)"
  rabbit_up "$from"
  for i in $(seq "$from" -1 $((to + 1))); do
    out=$(rabbitmq_queues shrink "$(node_name "$i")" --errors-only 2>&1 </dev/null) || die "cannot move quorum queues off $(node_name "$i"): $out"
    node_ctl "$i" stop_app >/dev/null
    out=$(node_ctl 1 forget_cluster_node "$(node_name "$i")" 2>&1 </dev/null) || die "cannot remove $(node_name "$i") from the cluster: $out"
    # Counted out at once: a shrink interrupted after this leaves a later `up` the nodes still in the cluster, not one
    # it forgot (which would wait for its old cluster until the start gave up).
    echo $((i - 1)) >"$RABBIT_NODES_FILE"
    node_delete "$i"
    log "RabbitMQ node $(node_name "$i") left the cluster"
  done
}

rabbit_setup() {
  # Each rabbitmqctl call starts an Erlang VM (about half a second here): the two dozen that set the users, permissions
  # and policy are skipped when the broker still holds what the last setup left (below).
  if [ -s "$RABBIT_SETUP_FILE" ]; then
    if [ "$(rabbit_setup_fingerprint)" = "$(cat "$RABBIT_SETUP_FILE")" ]; then
      log "RabbitMQ users, permissions and policy as the last setup left them"
      return 0
    fi
    log "RabbitMQ users, permissions or policy changed since the last setup (or its scripts or passwords did): setting them again"
  fi
  rabbitmqctl add_vhost "$APP_VHOST" >/dev/null 2>&1 || true
  rabbit_users
  rabbitmqctl delete_user guest >/dev/null 2>&1 || true
  # Faulted and set-aside messages are kept for inspection, but never without bound: a week, 10,000 messages or
  # 256 MiB per queue, the oldest dropped first.
  rabbitmqctl set_operator_policy -p "$APP_VHOST" --apply-to queues dancemoe-dead-letters '_(error|skipped)$' \
    '{"message-ttl":604800000,"max-length":10000,"max-length-bytes":268435456}' >/dev/null
  (umask 077; rabbit_setup_fingerprint >"$RABBIT_SETUP_FILE")
}

# What the setup depends on and what it leaves: the scripts that define it, the roles' password files, and the broker's
# users with their tags, the virtual host's permissions and its operator policies as the broker lists them. A user,
# tag, permission or policy changed or removed on the broker (or a new data folder), a new password file or a changed
# script gives another fingerprint, and the whole setup runs again. A password changed on the broker itself is not seen.
rabbit_setup_fingerprint() {
  {
    cat "$SCRIPT_DIR/services.sh" "$SCRIPT_DIR/rabbitmq-users.sh"
    local role; for role in $RABBITMQ_ROLES; do cat "$(rabbit_password_file "$role")" 2>/dev/null; echo; done
    rabbitmqctl list_users -q 2>&1 | sort
    rabbitmqctl list_permissions -p "$APP_VHOST" -q 2>&1 | sort
    rabbitmqctl list_operator_policies -p "$APP_VHOST" -q 2>&1 | sort
  } | sha256sum | cut -d' ' -f1
}

rabbit_password_file() { echo "$RABBIT_USERS_DIR/$1.password"; }

# The users of every role, with their permissions on the application's virtual host; the shared user of older scripts
# (administrator, used by everyone) is removed.
rabbit_users() {
  (umask 077; mkdir -p "$RABBIT_USERS_DIR")
  chmod 700 "$RABBIT_USERS_DIR"
  local role file
  for role in $RABBITMQ_ROLES; do
    file=$(rabbit_password_file "$role")
    if [ ! -s "$file" ]; then
      (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$file")
    fi
    chmod 600 "$file"
    rabbitmq_apply_role "$APP_VHOST" "$role" "$(cat "$file")"
  done
  if rabbitmqctl list_users -q 2>/dev/null | awk '{print $1}' | grep -qx "$APP_USER"; then
    log "removing RabbitMQ user $APP_USER (one administrator for everyone); each role has its own user now"
    rabbitmqctl delete_user "$APP_USER" >/dev/null
  fi
}

# amqp://USER:PASSWORD@HOST:PORT/VHOST of a role on the first node, a URI every AMQP client parses; with "all", every
# node's host:port comma-separated, as DanceMoE's processes take it to fail over. Nothing when the password is unreadable.
rabbit_role_uri() {
  local file hosts; file=$(rabbit_password_file "$1")
  [ -r "$file" ] || return 0
  if [ "${2:-}" = all ]; then hosts=$(rabbit_hosts); else hosts="127.0.0.1:$(node_amqp_port 1)"; fi
  echo "amqp://$(rabbitmq_role_user "$1"):$(cat "$file")@$hosts/$APP_VHOST"
}

pg_admin_password() {
  if [ ! -s "$PG_ADMIN_PASSWORD_FILE" ]; then
    (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$PG_ADMIN_PASSWORD_FILE")
  fi
  chmod 600 "$PG_ADMIN_PASSWORD_FILE"
}

# Passwords on every connection, the socket too; written at each start so older data directories
# (initialised with trust for local connections) are upgraded in place.
pg_write_hba() {
  cat >"$PG_DATA/pg_hba.conf" <<HBA
# Written by scripts/services.sh: scram-sha-256 everywhere, loopback only.
local all all scram-sha-256
host  all all 127.0.0.1/32 scram-sha-256
host  all all ::1/128 scram-sha-256
HBA
  chown postgres:postgres "$PG_DATA/pg_hba.conf"; chmod 600 "$PG_DATA/pg_hba.conf"
}

pg_start() {
  log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
  pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_DIR/postgres.log" -w -t 60 \
    -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=300 -c unix_socket_permissions=0700 -c password_encryption=scram-sha-256" start >/dev/null \
    || die "PostgreSQL failed to start: $(tail -n 3 "$PG_DIR/postgres.log")"
}

pg_up() {
  mkdir -p "$PG_DIR"
  chown postgres:postgres "$PG_DIR"
  # Only the postgres user may reach the socket (the folder holds it), whatever the running server's settings.
  chmod 700 "$PG_DIR"
  pg_admin_password
  if [ ! -f "$PG_DATA/PG_VERSION" ]; then
    log "initialising PostgreSQL cluster in $PG_DATA"
    local pwfile; pwfile=$(mktemp -p "$PG_DIR"); cp "$PG_ADMIN_PASSWORD_FILE" "$pwfile"; chown postgres "$pwfile"
    pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth=scram-sha-256 --pwfile="$pwfile" \
      -E UTF8 --locale=C.UTF-8 >"$PG_DIR/initdb.log" 2>&1 || { rm -f "$pwfile"; die "initdb failed: $(tail -n 3 "$PG_DIR/initdb.log")"; }
    rm -f "$pwfile"
  fi
  if pg_running; then
    log "PostgreSQL already running on 127.0.0.1:$PG_PORT"
    pg_upgrade_auth
    return
  fi
  port_in_use "$PG_PORT" && die "port $PG_PORT is taken by another process: stop it or set DANCEMOE_POSTGRES_PORT"
  if grep -qE '^[^#]*[[:space:]]trust([[:space:]]|$)' "$PG_DATA/pg_hba.conf"; then
    pg_start
    pg_upgrade_auth
  else
    pg_write_hba
    pg_start
  fi
}

# A data directory from before passwords everywhere: set the superuser's password while the socket
# still trusts it, then require passwords (a reload is enough for pg_hba.conf).
pg_upgrade_auth() {
  grep -qE '^[^#]*[[:space:]]trust([[:space:]]|$)' "$PG_DATA/pg_hba.conf" || return 0
  log "upgrading $PG_DATA to password authentication (scram-sha-256)"
  pg psql -h "$PG_DIR" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA \
    -c "SET password_encryption = 'scram-sha-256'" \
    -c "ALTER ROLE postgres PASSWORD '$(cat "$PG_ADMIN_PASSWORD_FILE")'" >/dev/null
  pg_write_hba
  pg "$PG_BIN/pg_ctl" -D "$PG_DATA" reload >/dev/null
  sleep 1
}

pg_setup() {
  psql_admin <<SQL
SET password_encryption = 'scram-sha-256';
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$APP_USER') THEN
    CREATE ROLE $APP_USER LOGIN PASSWORD '$APP_PASSWORD';
  END IF;
  -- The read-only group analysts' logins are members of (./dancemoe db analyst); the migrations grant it the views.
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'dancemoe_analyst') THEN
    CREATE ROLE dancemoe_analyst NOLOGIN;
  END IF;
END \$\$;
COMMENT ON ROLE dancemoe_analyst IS 'Reads the DanceMoE analyst views and nothing else; analysts'' logins (./dancemoe db analyst) are its members.';
-- The application needs no role or database of its own making: services up, tests and benchmarks use the superuser.
ALTER ROLE $APP_USER NOCREATEDB NOCREATEROLE PASSWORD '$APP_PASSWORD';
DO \$\$ BEGIN
  IF pg_has_role('$APP_USER', 'pg_signal_backend', 'MEMBER') THEN
    REVOKE pg_signal_backend FROM $APP_USER;
  END IF;
END \$\$;
SQL
  if [ -z "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$APP_DB'")" ]; then
    psql_admin -c "CREATE DATABASE $APP_DB OWNER $APP_USER" >/dev/null
  fi
  pg_disable_constant_analyst
}

# Older migrations created the login analyst with the password 'analyst': if that still logs in, it loses its login.
pg_disable_constant_analyst() {
  if PGPASSWORD=analyst PGCONNECT_TIMEOUT=5 psql -h 127.0.0.1 -p "$PG_PORT" -U analyst -d "$APP_DB" -qtA -c 'SELECT 1' >/dev/null 2>&1; then
    log "disabling the login analyst (constant password from an older migration); create analysts with ./dancemoe db analyst"
    psql_admin -c "ALTER ROLE analyst NOLOGIN PASSWORD NULL" >/dev/null
  fi
}

# Queues from before the replicated broker: request, control and saga queues were classic, expert queues and the
# coordinator's heartbeat and acknowledgement queues durable.
# RabbitMQ refuses to declare a queue again with another type or durability (PRECONDITION_FAILED), so the old ones go
# while nobody consumes them; their consumers declare them anew at start.
rabbit_upgrade_queues() {
  local name type durable consumers
  node_ctl 1 list_queues -p "$APP_VHOST" -q --no-table-headers name type durable consumers 2>/dev/null |
    while read -r name type durable consumers; do
      case "$name" in
        edge-*-experts|coordinator-heartbeats|coordinator-lagging-edges|coordinator-placement-applied) [ "$durable" = true ] || continue ;;
        edge-*_error|edge-*_skipped) continue ;;
        edge-*|coordinator|coordinator-migrations|coordinator-activations) [ "$type" = classic ] || continue ;;
        *) continue ;;
      esac
      [ "$consumers" = 0 ] || { log "queue $name is still consumed: stop its edge or coordinator and run services up again to upgrade it"; continue; }
      log "upgrading queue $name: deleted (declared again as a quorum or transient queue by its consumer)"
      node_ctl 1 delete_queue -p "$APP_VHOST" "$name" >/dev/null </dev/null
    done
  # An expert queue's exchange is transient too now (the coordinator's notice queues' as well); the old durable one goes with its queue.
  node_ctl 1 list_exchanges -p "$APP_VHOST" -q --no-table-headers name durable 2>/dev/null |
    while read -r name durable; do
      case "$name" in edge-*-experts|coordinator-heartbeats|coordinator-lagging-edges|coordinator-placement-applied) ;; *) continue ;; esac
      [ "$durable" = true ] || continue
      node_ctl 1 list_queues -p "$APP_VHOST" -q --no-table-headers name </dev/null 2>/dev/null | grep -qx "$name" && continue
      # rabbitmqctl has no delete_exchange.
      node_ctl 1 eval "rabbit_exchange:delete(rabbit_misc:r(<<\"$APP_VHOST\">>, exchange, <<\"$name\">>), false, <<\"services\">>)." >/dev/null </dev/null
    done
}

node_stop() {
  local i="$1" dir n left; dir=$(node_dir "$i")
  if node_running "$i"; then
    log "stopping RabbitMQ node $(node_name "$i")"
    node_ctl "$i" stop "$dir/rabbitmq.pid" >/dev/null 2>&1 || kill "$(head -n1 "$dir/rabbitmq.pid")" 2>/dev/null || true
  fi
  # A VM without a pid file (a start that failed halfway) would hold the node's ports against the next start.
  left=$(node_vm_pids "$i")
  if [ -n "$left" ]; then
    log "stopping a RabbitMQ VM of node $(node_name "$i") without a pid file (pid $(echo $left))"
    kill $left 2>/dev/null || true
    for n in $(seq 1 50); do
      [ -z "$(node_vm_pids "$i")" ] && break
      sleep 0.2
    done
    left=$(node_vm_pids "$i")
    if [ -n "$left" ]; then kill -9 $left 2>/dev/null || true; fi
  fi
  rm -f "$dir/rabbitmq.pid"
}

# A node out of the cluster: stopped, its data deleted.
node_delete() { node_stop "$1"; rm -rf "$(node_dir "$1")"; }

# SIGKILL, as a crash or a lost machine would: the node's pid file stays, so `node start` knows it is down.
node_kill() {
  local i="$1" dir; dir=$(node_dir "$i")
  node_running "$i" || { log "RabbitMQ node $(node_name "$i") is not running"; return 0; }
  log "killing RabbitMQ node $(node_name "$i") (SIGKILL)"
  kill -9 "$(head -n1 "$dir/rabbitmq.pid")"
  while node_running "$i"; do sleep 0.1; done
}

# Nodes beyond the recorded count left the cluster in a shrink interrupted after node 1 forgot them: started with their
# data, they would wait for a cluster that no longer has them until the start gave up. Stopped and their data deleted.
rabbit_remove_stale_nodes() {
  local i
  for i in $(seq $(($(rabbit_nodes) + 1)) 9); do
    [ -d "$(node_dir "$i")" ] || continue
    log "removing RabbitMQ node $(node_name "$i"), which an interrupted shrink took out of the cluster but left on disk"
    node_delete "$i"
  done
}

rabbit_down() {
  local i
  rabbit_remove_stale_nodes
  for i in $(seq "$(rabbit_nodes)" -1 1); do node_stop "$i"; done
  # epmd outlives the node; ours listens on its own port, so this kills only ours.
  ERL_EPMD_PORT="$EPMD_PORT" epmd -kill >/dev/null 2>&1 || true
}

# node start|stop|kill I|all: one node, or every node of the cluster (start: started together, then awaited).
node_verb() {
  local action="${1:-}" which="${2:-}" nodes i; nodes=$(rabbit_nodes)
  local targets
  case "$which" in
    all) targets=$(seq 1 "$nodes") ;;
    [1-9]) [ "$which" -le "$nodes" ] || die "node $which: only $nodes RabbitMQ node(s) configured"; targets="$which" ;;
    *) die "usage: services node start|stop|kill I|all" ;;
  esac
  case "$action" in
    start) for i in $targets; do node_start "$i"; done; for i in $targets; do node_await "$i" $targets; done ;;
    stop) for i in $(echo "$targets" | sort -rn); do node_stop "$i"; done ;;
    kill) for i in $targets; do node_kill "$i"; done ;;
    *) die "usage: services node start|stop|kill I|all" ;;
  esac
}

pg_down() {
  if pg_running; then
    log "stopping PostgreSQL"
    pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null
  fi
}

state_word() { if $1; then echo running; else echo stopped; fi; }

rabbit_hosts() {
  local i hosts=""
  for i in $(seq 1 "$(rabbit_nodes)"); do hosts="$hosts${hosts:+,}127.0.0.1:$(node_amqp_port "$i")"; done
  echo "$hosts"
}

nodes_json() {
  local i out=""
  for i in $(seq 1 "$(rabbit_nodes)"); do
    out="$out${out:+, }{\"name\": \"$(node_name "$i")\", \"amqp_port\": $(node_amqp_port "$i"), \"management_port\": $(node_mgmt_port "$i"), \"state\": \"$(state_word "node_running $i")\"}"
  done
  echo "[$out]"
}

status() {
  # With several nodes a URI lists every node's host:port, comma-separated: clients fail over between them.
  local rabbitmq_uri; rabbitmq_uri=$(rabbit_role_uri client all)
  local postgres_url="postgresql://$APP_USER:$APP_PASSWORD@127.0.0.1:$PG_PORT/$APP_DB"
  local r p; r=$(state_word rabbit_running); p=$(state_word pg_running)
  if [ "${1:-}" = "--json" ]; then
    cat <<JSON
{"rabbitmq": "$r", "postgres": "$p", "rabbitmq_uri": "$rabbitmq_uri", "rabbitmq_users": {"client": "$(rabbit_role_uri client)", "edge": "$(rabbit_role_uri edge)", "coordinator": "$(rabbit_role_uri coordinator)", "ops": "$(rabbit_role_uri ops)"}, "rabbitmq_cluster_users": {"client": "$rabbitmq_uri", "edge": "$(rabbit_role_uri edge all)", "coordinator": "$(rabbit_role_uri coordinator all)", "ops": "$(rabbit_role_uri ops all)"}, "rabbitmq_management_url": "http://127.0.0.1:$MGMT_PORT", "postgres_url": "$postgres_url", "state_dir": "$STATE", "rabbitmq_nodes": $(nodes_json)}
JSON
  else
    echo "RabbitMQ   $r  amqp://$(rabbit_hosts)/$APP_VHOST  (management http://127.0.0.1:$MGMT_PORT, node $(node_name 1))"
    echo "           users $(for role in $RABBITMQ_ROLES; do printf '%s ' "$(rabbitmq_role_user "$role")"; done)(passwords in $RABBIT_USERS_DIR)"
    local i
    for i in $(seq 2 "$(rabbit_nodes)"); do
      echo "  node $i   $(state_word "node_running $i")  $(node_name "$i") on 127.0.0.1:$(node_amqp_port "$i") (management http://127.0.0.1:$(node_mgmt_port "$i"))"
    done
    echo "PostgreSQL $p  $postgres_url  (data $PG_DATA)"
    echo "state      $STATE"
  fi
  [ "$r" = running ] && [ "$p" = running ]
}

main() {
  local verb="${1:-}"; shift || true
  case "$verb" in
    up)
      local nodes rabbitmq_only=""
      nodes=$(rabbit_nodes)
      while [ $# -gt 0 ]; do
        case "$1" in
          --rabbitmq-nodes) nodes="${2:-}"; shift 2 || die "--rabbitmq-nodes takes a number" ;;
          --rabbitmq-only) rabbitmq_only=1; shift ;;
          *) die "up: unknown option $1 (usage: dancemoe services up [--rabbitmq-nodes N] [--rabbitmq-only])" ;;
        esac
      done
      [[ "$nodes" =~ ^[1-9]$ ]] || die "--rabbitmq-nodes takes a number from 1 to 9, not '$nodes'"
      mkdir -p "$STATE" "$RABBIT_DIR"; chmod 755 "$STATE"
      ensure_installed
      if [ "$nodes" -lt "$(rabbit_nodes)" ]; then rabbit_shrink "$(rabbit_nodes)" "$nodes"; fi
      rabbit_remove_stale_nodes
      echo "$nodes" >"$RABBIT_NODES_FILE"
      rabbit_up "$nodes"; rabbit_setup; rabbit_upgrade_queues; rabbit_grow_queues "$nodes"
      # A broker of its own (the replicated-broker tests start one on other ports) needs no database.
      [ -n "$rabbitmq_only" ] && return 0
      pg_up; pg_setup
      status
      ;;
    down) rabbit_down; pg_down; log "stopped" ;;
    status) status "$@" ;;
    node) node_verb "$@" ;;
    pids) service_pids ;;
    postgres)
      case "${1:-}" in
        start) pg_up ;;
        stop) pg_down ;;
        *) die "usage: services postgres start|stop" ;;
      esac
      ;;
    *) echo "usage: dancemoe services up [--rabbitmq-nodes N]|down|status [--json]|node start|stop|kill I|all|postgres start|stop|pids" >&2; exit 2 ;;
  esac
}

# One `up` or `down` at a time per state folder (`dancemoe test`, the demo and the checks all run `up`): two at once
# raced, the second failing on a broker user the first had just added. flock(1) holds the lock while the run goes on;
# --close keeps the descriptor from the run, so the broker and PostgreSQL it starts do not hold the lock after.
LOCK_FILE="$STATE/services.lock"
case "${1:-}" in
  up|down)
    if [ -z "${DANCEMOE_SERVICES_LOCK_HELD:-}" ]; then
      mkdir -p "$STATE"
      flock -n "$LOCK_FILE" true || log "waiting for another services up or down on $STATE to finish..."
      DANCEMOE_SERVICES_LOCK_HELD=1 exec flock --close "$LOCK_FILE" bash "$0" "$@"
    fi
    ;;
esac

main "$@"
