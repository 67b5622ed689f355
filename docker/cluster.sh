#!/usr/bin/env bash
# Runs the 5-node, 3-zone levee cluster of docker/compose.yml and breaks it
# on purpose. Every command prints what it does.
#
#   docker/cluster.sh build         base image if missing, release binaries, image
#   docker/cluster.sh up            build, start n1..n5, wait until all serve
#   docker/cluster.sh down [-v]     remove the containers (-v: and their data)
#   docker/cluster.sh status        containers, health, `levee status`
#   docker/cluster.sh endpoints     the LEVEE_ENDPOINTS value for the host
#   docker/cluster.sh kill N        SIGKILL node N (a crash)
#   docker/cluster.sh stop N        SIGTERM node N (it drains, then exits)
#   docker/cluster.sh start N       start node N again, same data and address
#   docker/cluster.sh pause N       freeze node N (cgroup freezer)
#   docker/cluster.sh unpause N     thaw node N
#   docker/cluster.sh partition N   cut node N off the network
#   docker/cluster.sh heal N        reconnect node N at its address
#   docker/cluster.sh logs N [ARGS] docker logs of node N (ARGS: e.g. -f)
#   docker/cluster.sh levee ARGS    the host's levee CLI against the cluster
#   docker/cluster.sh certs         make the certificates if missing (up does)
#   docker/cluster.sh rotate N      re-issue node N's certificate in place;
#                                   the node picks it up, no restart
#
# Every port speaks mutual TLS: `up` makes a CA, one pair per node (named
# nN, its bridge address and 127.0.0.1) and the client "root" for the
# host's CLI, under LEVEE_DOCKER_CERTS (default target/docker-certs/PROJECT;
# `down -v` removes them with the data).
#
# N is 1..5 (service nN). Environment: LEVEE_COMPOSE_PROJECT (default
# levee), LEVEE_NET (default 172.28.5) and LEVEE_PORTS (default 74: ports
# 7410.. and 7420..), as in compose.yml; LEVEE_IMAGE (default levee:local);
# LEVEE_RECOVERY (recovery settings of a new cluster, read by `up`);
# LEVEE_UP_TIMEOUT (seconds, default 180); LEVEE_DOCKER_CERTS;
# CARGO_TARGET_DIR.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
project=${LEVEE_COMPOSE_PROJECT:-levee}
net_prefix=${LEVEE_NET:-172.28.5}
port_prefix=${LEVEE_PORTS:-74}
image=${LEVEE_IMAGE:-levee:local}
target=${CARGO_TARGET_DIR:-$root/target}
levee_bin=$target/release/levee
context=$target/docker-context
nodes=(1 2 3 4 5)
# Read by compose.yml for the certificate mounts.
export LEVEE_DOCKER_CERTS=${LEVEE_DOCKER_CERTS:-$target/docker-certs/$project}
certs_root=$LEVEE_DOCKER_CERTS
# The image runs as this user; it must be able to read its key.
image_uid=10001

say() { echo "cluster: $*"; }
die() { echo "cluster: error: $*" >&2; exit 1; }

# --- docker and compose -------------------------------------------------------

require_docker() {
    command -v docker >/dev/null ||
        die "docker is not installed; this needs the docker engine and docker-compose (Debian: apt-get install docker.io docker-compose)"
    docker info >/dev/null 2>&1 ||
        die "the docker engine is not reachable ('docker info' fails); is dockerd running, and may this user use it?"
    if docker compose version >/dev/null 2>&1; then
        compose_cmd=(docker compose)
    elif command -v docker-compose >/dev/null; then
        compose_cmd=(docker-compose)
    else
        die "neither 'docker compose' nor docker-compose is installed"
    fi
}

compose() { "${compose_cmd[@]}" -p "$project" -f "$here/compose.yml" "$@"; }

# The bridge network compose created for the cluster (found by its labels,
# since compose versions spell project names differently).
network() {
    local name
    name=$(docker network ls --format '{{.Name}}' \
        --filter "label=com.docker.compose.project=$project" \
        --filter label=com.docker.compose.network=cluster | head -n1)
    [[ -n $name ]] || die "project $project has no cluster network; run: docker/cluster.sh up"
    echo "$name"
}

# Node N's address on that network (compose.yml gives nN the address .1N).
node_ip() { echo "$net_prefix.1$1"; }

node_arg() {
    [[ ${1:-} =~ ^[1-5]$ ]] || die "expected a node number 1..5, got '${1:-}'"
}

# The container of node N (running or not).
container() {
    local id
    id=$(compose ps -a -q "n$1" 2>/dev/null || true)
    [[ -n $id ]] || die "node $1 has no container; run: docker/cluster.sh up"
    echo "$id"
}

container_name() { docker inspect -f '{{.Name}}' "$1" | sed 's#^/##'; }

# --- build ----------------------------------------------------------------------

build() {
    "$here/base-image.sh"
    # --workspace: from the root, a plain `cargo build` builds only the root
    # package (the integration tests), not the binaries.
    say "cargo build --release --workspace --bins (levee-node, levee)"
    (cd "$root" && cargo build --release --workspace --bins --quiet)
    # The build context holds just the two binaries: small and quick to send.
    mkdir -p "$context"
    cp "$target/release/levee-node" "$target/release/levee" "$context/"
    say "docker build -f docker/Dockerfile -t $image $context"
    docker build --quiet -f "$here/Dockerfile" -t "$image" "$context" >/dev/null
}

# --- the cluster as a whole ----------------------------------------------------------

endpoints() {
    local list=() n
    for n in "${nodes[@]}"; do list+=("127.0.0.1:${port_prefix}1$((n - 1))"); done
    (IFS=,; echo "${list[*]}")
}

levee() {
    LEVEE_ENDPOINTS=${LEVEE_ENDPOINTS:-$(endpoints)} LEVEE_CERTS_DIR=$certs_root/client \
        "$levee_bin" "$@"
}

# --- certificates -----------------------------------------------------------------------

cert() { "$levee_bin" cert "$@" >/dev/null; }

# The node directory readable by the image's user only.
own() {
    chown -R "$image_uid:$image_uid" "$1" ||
        die "cannot give $1 to uid $image_uid (the image's user); run as root, or chown it by hand"
    chmod 700 "$1"
}

certs() {
    local n dir
    if [[ -f $certs_root/ca/ca.crt ]]; then
        for n in "${nodes[@]}"; do
            [[ -f $certs_root/n$n/node.crt ]] || die "$certs_root is incomplete (no n$n/node.crt); remove it to start over"
        done
        return 0
    fi
    say "certificates: a CA, a pair per node (nN, $net_prefix.1N, 127.0.0.1), client root; in $certs_root"
    mkdir -p "$certs_root"
    cert create-ca --certs-dir "$certs_root/ca"
    for n in "${nodes[@]}"; do
        dir=$certs_root/n$n
        mkdir -p "$dir"
        cp "$certs_root/ca/ca.crt" "$dir/"
        cert create-node --certs-dir "$dir" --ca-key "$certs_root/ca/ca.key" \
            --host "n$n" --ip "$(node_ip "$n")" --ip 127.0.0.1
        own "$dir"
    done
    mkdir -p "$certs_root/client"
    cp "$certs_root/ca/ca.crt" "$certs_root/client/"
    cert create-client root --certs-dir "$certs_root/client" --ca-key "$certs_root/ca/ca.key"
}

rotate() {
    local n=$1 dir=$certs_root/n$1
    say "n$n: levee cert rotate --certs-dir $dir (same names, new key); the node reloads it within seconds"
    "$levee_bin" cert rotate --certs-dir "$dir" --ca-key "$certs_root/ca/ca.key"
    own "$dir"
}

health_of() {
    docker inspect -f '{{.State.Status}}{{if .State.Health}}/{{.State.Health.Status}}{{end}}' "$1" 2>/dev/null
}

up() {
    build
    certs
    say "starting n1 (zone z1, initialises), then n2..n5 (zones z2, z3, z1, z2; join n1)${LEVEE_RECOVERY:+ with LEVEE_RECOVERY=$LEVEE_RECOVERY}"
    compose up -d --no-build
    wait_serving "${LEVEE_UP_TIMEOUT:-180}"
    say "up: 5 nodes; from the host: export LEVEE_ENDPOINTS=$(endpoints)"
}

# Waits until every container is healthy and the cluster map lists every
# node as up (the joins are done).
wait_serving() {
    local deadline=$((SECONDS + $1)) n unhealthy up_count
    say "waiting for 5 healthy containers and 5 nodes up in the map (up to $1 s)"
    while :; do
        unhealthy=()
        for n in "${nodes[@]}"; do
            [[ $(health_of "$(container "$n")") == running/healthy ]] || unhealthy+=("n$n")
        done
        up_count=0
        if [[ ${#unhealthy[@]} -eq 0 ]]; then
            up_count=$(levee status -o json 2>/dev/null | grep -o '"state": *"up"' | wc -l || true)
            [[ $up_count -eq 5 ]] && return 0
        fi
        if ((SECONDS >= deadline)); then
            compose ps >&2 || true
            die "not serving after $1 s (not healthy: ${unhealthy[*]:-none}; nodes up in the map: $up_count); see: docker/cluster.sh logs N"
        fi
        sleep 1
    done
}

down() {
    if [[ ${1:-} == -v ]]; then
        say "removing containers, network and volumes (the data) of project $project, and its certificates"
        compose down -v --remove-orphans
        rm -rf "$certs_root"
    else
        say "removing containers and network of project $project (volumes kept)"
        compose down --remove-orphans
    fi
}

status() {
    local n id state text node_id
    # The map numbers nodes in the order they joined; show both numbers.
    text=$(levee status 2>&1 || true)
    printf '%-5s %-8s %-22s %-28s %s\n' NODE "MAP ID" CONTAINER STATE ADDRESS
    for n in "${nodes[@]}"; do
        node_id=$(awk -v a="$(node_ip "$n"):7400" '$2 == a { print $1 }' <<<"$text")
        id=$(compose ps -a -q "n$n" 2>/dev/null || true)
        if [[ -z $id ]]; then
            printf '%-5s %-8s %-22s %-28s %s\n' "n$n" "${node_id:--}" - absent "$(node_ip "$n"):7400"
            continue
        fi
        state=$(health_of "$id")
        if ! docker inspect -f '{{json .NetworkSettings.Networks}}' "$id" | grep -q "\"$(network)\""; then
            state="$state,partitioned"
        fi
        printf '%-5s %-8s %-22s %-28s %s\n' "n$n" "${node_id:--}" "$(container_name "$id")" "$state" "$(node_ip "$n"):7400"
    done
    echo
    echo "$text"
}

# --- faults -------------------------------------------------------------------------

fault() {
    local action=$1 n=$2 id name
    id=$(container "$n")
    name=$(container_name "$id")
    case $action in
    kill)
        say "n$n: docker kill $name (SIGKILL, no drain)"
        docker kill "$id" >/dev/null
        ;;
    stop)
        say "n$n: docker stop $name (SIGTERM: drain, flush, exit)"
        docker stop -t 35 "$id" >/dev/null
        ;;
    start)
        say "n$n: docker start $name"
        docker start "$id" >/dev/null
        ;;
    pause)
        say "n$n: docker pause $name (frozen: connections stay open, nothing answers)"
        docker pause "$id" >/dev/null
        ;;
    unpause)
        say "n$n: docker unpause $name"
        docker unpause "$id" >/dev/null
        ;;
    partition)
        say "n$n: docker network disconnect $(network) $name (cut off from every node and the host)"
        docker network disconnect "$(network)" "$id"
        ;;
    heal)
        say "n$n: docker network connect --ip $(node_ip "$n") --alias n$n $(network) $name"
        docker network connect --ip "$(node_ip "$n")" --alias "n$n" "$(network)" "$id"
        ;;
    esac
}

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    exit 2
}

main() {
    local cmd=${1:-}
    [[ -n $cmd ]] || usage
    shift
    case $cmd in
    -h | --help | help) usage ;;
    endpoints) endpoints; return ;;
    certs) certs; return ;;
    esac
    require_docker
    case $cmd in
    build) build ;;
    up) up ;;
    down) down "$@" ;;
    status) status ;;
    levee) levee "$@" ;;
    certs) certs ;;
    rotate)
        node_arg "${1:-}"
        rotate "$1"
        ;;
    kill | stop | start | pause | unpause | partition | heal)
        node_arg "${1:-}"
        fault "$cmd" "$1"
        ;;
    logs)
        node_arg "${1:-}"
        local n=$1
        shift
        docker logs "$@" "$(container "$n")"
        ;;
    *) usage ;;
    esac
}

main "$@"
