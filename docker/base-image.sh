#!/usr/bin/env bash
# Makes sure the base image docker/Dockerfile starts FROM exists locally.
#
# Where a registry is reachable, this is an ordinary `docker pull`. Where
# none is (the engine starts with no images and cannot pull), it builds
# the image from Debian's own packages instead: debootstrap --variant=minbase
# (what Debian's official -slim images are made of), trimmed the same way
# (no docs, man pages or locales), and `docker import` under the same tag.
# It also includes the runtime packages the Dockerfile needs (curl for the
# health check, libfontconfig1 for the `levee` CLI), so that building the
# image needs no network.
#
# Usage: docker/base-image.sh [--force]
#   --force   rebuild with debootstrap even if the image exists
# Environment:
#   LEVEE_BASE_IMAGE     tag to create (default debian:bookworm-slim, the FROM)
#   LEVEE_DEBIAN_MIRROR  Debian mirror (default: the first bookworm mirror in
#                        this machine's apt sources, else http://deb.debian.org/debian)
set -euo pipefail

image=${LEVEE_BASE_IMAGE:-debian:bookworm-slim}
suite=bookworm
# Runtime packages of the levee image (see docker/Dockerfile).
include=curl,libfontconfig1,ca-certificates

say() { echo "base-image: $*"; }
die() { echo "base-image: error: $*" >&2; exit 1; }

command -v docker >/dev/null || die "docker is not installed (the docker engine and CLI are required)"
docker info >/dev/null 2>&1 || die "the docker engine is not reachable ('docker info' fails); start dockerd"

force=false
[[ ${1:-} == --force ]] && force=true

if ! $force && docker image inspect "$image" >/dev/null 2>&1; then
    say "$image is present"
    exit 0
fi

if ! $force; then
    say "trying: docker pull $image"
    if timeout 120 docker pull "$image" >/dev/null 2>&1; then
        say "pulled $image"
        exit 0
    fi
    say "no registry reachable; building $image from Debian packages with debootstrap"
fi

# debootstrap needs root (it creates device nodes and chroots).
sudo=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || die "debootstrap needs root; run as root or install sudo"
    sudo=(sudo)
fi
if ! command -v debootstrap >/dev/null; then
    say "installing debootstrap (apt-get install -y debootstrap)"
    "${sudo[@]}" apt-get install -y debootstrap >/dev/null ||
        { "${sudo[@]}" apt-get update >/dev/null && "${sudo[@]}" apt-get install -y debootstrap >/dev/null; } ||
        die "cannot install debootstrap"
fi

# The mirror: whatever this machine's apt already uses for Debian (it may
# be a local mirror or proxy when deb.debian.org is not reachable).
mirror=${LEVEE_DEBIAN_MIRROR:-}
if [[ -z $mirror ]]; then
    mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
        grep -vE '^[[:space:]]*#' | grep -oE 'https?://[^ ]+/debian/?( |$)' | head -n1 | tr -d ' ' || true)
    mirror=${mirror:-http://deb.debian.org/debian}
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/levee-base.XXXXXX")
trap '"${sudo[@]}" rm -rf "$work"' EXIT
rootfs=$work/rootfs

say "debootstrap --variant=minbase --include=$include $suite from $mirror (a minute or two)"
if ! "${sudo[@]}" debootstrap --variant=minbase --include="$include" "$suite" "$rootfs" "$mirror" \
    >"$work/debootstrap.log" 2>&1; then
    tail -n 30 "$work/debootstrap.log" >&2
    die "debootstrap failed (log above); set LEVEE_DEBIAN_MIRROR to a reachable Debian mirror"
fi

# Trim as Debian's -slim images are trimmed, and point apt at the public
# mirrors (as the official image does), not at this machine's mirror.
"${sudo[@]}" chroot "$rootfs" apt-get clean
"${sudo[@]}" rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
    "$rootfs"/usr/share/locale/* "$rootfs"/tmp/* "$rootfs"/etc/apt/sources.list
"${sudo[@]}" tee "$rootfs/etc/apt/sources.list.d/debian.sources" >/dev/null <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF

say "docker import -> $image"
"${sudo[@]}" tar --numeric-owner -C "$rootfs" -c . |
    docker import \
        --change 'CMD ["bash"]' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change "LABEL org.levee.base=debootstrap-$suite-minbase" \
        --message "debootstrap --variant=minbase --include=$include $suite $mirror" \
        - "$image" >/dev/null
say "built $image ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))"
