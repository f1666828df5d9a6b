#!/usr/bin/env bash
# End-to-end test under a real systemd: boots Debian 12 with systemd as PID 1 in a
# systemd-nspawn container (own network namespace, cgroup v2), installs grm's build outputs and
# units into it, and runs tests/e2e/inside.sh there: grmd.service, the example grm-echo.service
# (as root, User=, DynamicUser=yes) restarted under UDP load, nothing lost; the example
# grm-quic.service (HTTP/3) restarted and reloaded under real QUIC connections, none failed.
#
# The root filesystem comes from debootstrap and is cached in /var/cache/grm-test/, keyed by
# its package list (built once per machine; the container runs on a throw-away overlay of it,
# --volatile=overlay). Trees of other package lists (other branches) are left alone until
# unused for 2 days. The host side runs in a private mount namespace (a tmpfs over /run
# takes what nspawn writes there) and a cgroup of its own; the trap stops the container
# (SIGTERM to our nspawn: an orderly poweroff; SIGKILL by PID after a deadline) and removes
# the cgroup and the work directory. No machined, no machinectl: the host needs no systemd.
#
# Environment (meson sets it, see tests/meson.build): GRM_E2E_{GRMD,GRMCTL,ACTIVATE,DECOY,ECHO,
# LOAD,LIBCLIENT,QUIC_SERVER,QUIC_DRIVER} build outputs; GRM_E2E_{BINDIR,SBINDIR,LIBDIR} where they install;
# GRM_E2E_UNITS (build dir with the configured units); GRM_E2E_SRC (source root).
# Optional: GRM_E2E_MIRROR (Debian mirror), GRM_E2E_CACHE (default /var/cache/grm-test),
# GRM_E2E_RESTARTS (default 4), GRM_E2E_KEEP_RESULTS (a directory: the container's results and
# journals are copied there when the test fails).
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "SKIP: not running as root"
    exit 77
fi
for tool in systemd-nspawn debootstrap nsenter unshare flock openssl; do
    if ! command -v "$tool" >/dev/null; then
        echo "SKIP: $tool is missing (scripts/install-deps.sh installs it)"
        exit 77
    fi
done

# Everything below runs in a private mount namespace: mounts vanish with it.
if [ -z "${GRM_E2E_PRIVATE_NS:-}" ]; then
    exec unshare --mount --propagation private env GRM_E2E_PRIVATE_NS=1 bash "$0" "$@"
fi

now_ms() { echo $(($(date +%s%N) / 1000000)); }
log() { echo "systemd-e2e: $*"; }
t_start=$(now_ms)

# ---- the root filesystem, cached ------------------------------------------------------------
suite=bookworm
mirror=${GRM_E2E_MIRROR:-http://deb.debian.org/debian}
# The runtime libraries grmd, grmctl and the tools link (same Debian packages as the host),
# systemd as init, procps for pgrep, passwd for useradd (the User= service); for the HTTP/3
# service: grm-quic-server's libraries (ngtcp2 0.12 with gnutls, nghttp3 0.8) and gtlsclient.
packages=systemd,systemd-sysv,libbpf1,libfmt9,libsystemd0,procps,passwd
packages=$packages,libngtcp2-9,libngtcp2-crypto-gnutls2,libnghttp3-3,libgnutls30,ngtcp2-client
layout=2 # bump when the post-debootstrap setup below changes
cache=${GRM_E2E_CACHE:-/var/cache/grm-test}
key=$(printf '%s\n' "$suite" "$packages" "$layout" | sha256sum | cut -c1-12)
rootfs=$cache/rootfs-$suite-$key
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [ ! -d "$rootfs" ]; then
    # Half-built trees of runs that died (their builder's pid is the suffix). Trees of other
    # package lists (about 200 MB each) may be in use by a run of another branch right now
    # (the lock covers building only): removed only when none used them for 2 days.
    for old in "$cache"/rootfs-*.tmp.*; do
        [ -e "$old" ] && ! kill -0 "${old##*.}" 2>/dev/null && rm -rf "$old"
    done
    for old in "$cache"/rootfs-*; do
        case "$old" in *.tmp.* | *.used | "$rootfs") continue ;; esac
        [ -d "$old" ] && [ -n "$(find "$old.used" -mmin +2880 2>/dev/null)" ] &&
            rm -rf "$old" "$old.used"
    done
    tmp=$rootfs.tmp.$$
    log "building $rootfs with debootstrap ($packages) from $mirror"
    t0=$(now_ms)
    if ! debootstrap --variant=minbase --include="$packages" "$suite" "$tmp" "$mirror" \
        >"$cache/debootstrap.log" 2>&1; then
        tail -20 "$cache/debootstrap.log"
        rm -rf "$tmp"
        echo "systemd-e2e: FAIL: debootstrap failed (log: $cache/debootstrap.log)"
        exit 1
    fi
    echo grm-e2e >"$tmp/etc/hostname"
    rm -f "$tmp"/var/cache/apt/archives/*.deb
    mv "$tmp" "$rootfs"
    log "debootstrap took $(($(now_ms) - t0)) ms"
else
    log "cached root filesystem $rootfs"
fi
touch "$rootfs.used" # see the cleanup above
flock -u 9

# ---- work directory: grm as installed, the units, the container script ---------------------
work=$(mktemp -d /tmp/grm-e2e-XXXXXX)
cg=""
npid=""
cleanup() {
    local rc=$?
    set +e
    # First what we run in the container (the test script, the load): a draining service
    # would wait for the load to stop before the container can power off.
    if [ -n "$cg" ] && [ -f "$cg/driver/cgroup.procs" ]; then
        for _ in $(seq 50); do
            pids=$(cat "$cg/driver/cgroup.procs")
            [ -z "$pids" ] && break
            kill -KILL $pids 2>/dev/null
            sleep 0.1
        done
    fi
    if [ -n "$npid" ] && kill -0 "$npid" 2>/dev/null; then
        kill -TERM "$npid" # nspawn: orderly poweroff of the container
        for _ in $(seq 300); do kill -0 "$npid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$npid" 2>/dev/null; then
            log "container did not stop in 30 s: SIGKILL"
            kill -KILL "$npid"
        fi
        wait "$npid" 2>/dev/null
    fi
    if [ -n "$cg" ] && [ -d "$cg" ]; then
        # Whatever is left in our cgroup is ours: kill it by PID, then remove the tree.
        for _ in $(seq 50); do
            pids=$(find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null)
            [ -z "$pids" ] && break
            kill -KILL $pids 2>/dev/null
            sleep 0.1
        done
        find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null
        [ -d "$cg" ] && log "WARNING: could not remove $cg"
    fi
    umount -l "$work/bpffs" 2>/dev/null
    if [ "$rc" -ne 0 ] && [ -n "${GRM_E2E_KEEP_RESULTS:-}" ] && [ -d "$work/results" ]; then
        mkdir -p "$GRM_E2E_KEEP_RESULTS" && cp -a "$work/results/." "$GRM_E2E_KEEP_RESULTS/" &&
            log "results kept in $GRM_E2E_KEEP_RESULTS"
    fi
    rm -rf "$work"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stage=$work/stage
if [ -z "${GRM_E2E_QUIC_SERVER:-}" ]; then
    echo "systemd-e2e: FAIL: grm-quic-server was not built (ngtcp2/nghttp3 missing: bash scripts/install-deps.sh)"
    exit 1
fi
mkdir -p "$stage/units/grm-echo.service.d" "$stage/quic" "$work/results" \
    "$stage$GRM_E2E_BINDIR" "$stage$GRM_E2E_SBINDIR" "$stage$GRM_E2E_LIBDIR"
install -m 0755 "$GRM_E2E_GRMD" "$stage$GRM_E2E_SBINDIR/grmd"
for b in "$GRM_E2E_GRMCTL" "$GRM_E2E_ACTIVATE" "$GRM_E2E_DECOY" "$GRM_E2E_ECHO" "$GRM_E2E_LOAD" \
    "$GRM_E2E_QUIC_SERVER" "$GRM_E2E_QUIC_DRIVER"; do
    install -m 0755 "$b" "$stage$GRM_E2E_BINDIR/"
done
install -m 0644 "$GRM_E2E_LIBCLIENT" "$stage$GRM_E2E_LIBDIR/"
ln -s "$(basename "$GRM_E2E_LIBCLIENT")" "$stage$GRM_E2E_LIBDIR/libgrmclient.so.0"
case "$GRM_E2E_BINDIR $GRM_E2E_SBINDIR $GRM_E2E_LIBDIR" in
*/usr/local/*) ;;
*)
    echo "systemd-e2e: FAIL: inside.sh installs /usr/local; configure with the default prefix"
    exit 1
    ;;
esac
install -m 0644 "$GRM_E2E_UNITS/grmd.service" "$GRM_E2E_UNITS/grm-echo.service" \
    "$GRM_E2E_UNITS/grm-quic.service" "$stage/units/"
install -m 0644 "$GRM_E2E_SRC/systemd/grm-echo.service.d/"*.conf "$stage/units/grm-echo.service.d/"
# The HTTP/3 service's throwaway certificate (ECDSA P-256, 1 day) and reset secret.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj /CN=localhost -keyout "$stage/quic/key.pem" -out "$stage/quic/cert.pem" >/dev/null 2>&1 ||
    { echo "systemd-e2e: FAIL: openssl could not make a certificate"; exit 1; }
head -c 32 /dev/urandom >"$stage/quic/reset.secret"
install -m 0755 "$GRM_E2E_SRC/tests/e2e/inside.sh" "$stage/inside.sh"

# ---- boot ------------------------------------------------------------------------------------
cgroot=/sys/fs/cgroup
[ "$(stat -f -c %T "$cgroot")" = cgroup2fs ] || cgroot=/sys/fs/cgroup/unified
if [ "$(stat -f -c %T "$cgroot" 2>/dev/null)" != cgroup2fs ]; then
    echo "SKIP: no cgroup v2 hierarchy"
    exit 77
fi
# Cgroups of earlier runs that were killed before their trap ran: empty, their script gone.
for old in "$cgroot"/grm-e2e-*; do
    [ -d "$old" ] || continue
    kill -0 "${old##*-}" 2>/dev/null && continue
    [ -z "$(find "$old" -name cgroup.procs -exec cat {} + 2>/dev/null)" ] &&
        find "$old" -depth -type d -exec rmdir {} + 2>/dev/null
done
cg=$cgroot/grm-e2e-$$
mkdir "$cg" "$cg/driver"
# What nspawn writes under /run (locks, propagation dirs) stays in this namespace.
mount -t tmpfs -o mode=0755 tmpfs /run
# nspawn's /sys has no /sys/fs/bpf: the container gets a bpffs instance of its own (not the
# host's), gone with this mount namespace.
mkdir "$work/bpffs"
mount -t bpf -o mode=0700 bpf "$work/bpffs"
machine=grm-e2e-$$
t0=$(now_ms)
(
    echo "$BASHPID" >"$cg/cgroup.procs"
    export SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1
    # Should this script be killed outright (no trap), nspawn still powers the container off.
    exec setpriv --pdeathsig TERM systemd-nspawn --quiet --directory="$rootfs" --volatile=overlay --machine="$machine" \
        --private-network --register=no --keep-unit --link-journal=no --resolv-conf=off \
        --timezone=off --capability=CAP_BPF,CAP_PERFMON --system-call-filter="bpf pidfd_getfd" \
        --bind-ro="$stage:/opt/grm-e2e/stage" --bind="$work/results:/opt/grm-e2e-results" \
        --bind="$work/bpffs:/sys/fs/bpf" \
        --boot </dev/null >"$work/nspawn.log" 2>&1
) &
npid=$!

# The container's init: the child of nspawn that runs systemd.
leader=""
deadline=$(($(now_ms) + 60000))
while [ -z "$leader" ]; do
    for p in $(cat "/proc/$npid/task/$npid/children" 2>/dev/null); do
        [ "$(cat "/proc/$p/comm" 2>/dev/null)" = systemd ] && leader=$p
    done
    if ! kill -0 "$npid" 2>/dev/null || [ "$(now_ms)" -gt "$deadline" ]; then
        cat "$work/nspawn.log"
        echo "systemd-e2e: FAIL: the container did not start"
        exit 1
    fi
    [ -n "$leader" ] || sleep 0.05
done
# Commands in the container's namespaces; on the host they sit in our driver cgroup, so that
# the trap finds every one of them (nsenter's child is in the container's pid namespace).
inside() {
    (
        echo "$BASHPID" >"$cg/driver/cgroup.procs"
        exec nsenter --target "$leader" --all env -i \
            PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
    )
}
state=""
deadline=$(($(now_ms) + 120000))
until [ "$state" = running ] || [ "$state" = degraded ]; do
    state=$(inside systemctl is-system-running 2>/dev/null || true)
    if ! kill -0 "$npid" 2>/dev/null || [ "$(now_ms)" -gt "$deadline" ]; then
        tail -40 "$work/nspawn.log"
        echo "systemd-e2e: FAIL: the container's systemd did not finish booting (state '$state')"
        exit 1
    fi
    sleep 0.1
done
log "container $machine booted in $(($(now_ms) - t0)) ms: systemd is PID 1 there, state $state"
inside systemctl --failed --no-legend --no-pager | sed 's/^/systemd-e2e: failed unit in container: /' || true

# ---- the test --------------------------------------------------------------------------------
set +e
# In the background, so that a signal reaches the trap at once (bash runs traps between
# commands, and `wait` is interruptible).
inside env GRM_E2E_RESTARTS="${GRM_E2E_RESTARTS:-4}" bash /opt/grm-e2e/stage/inside.sh &
wait $!
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
    echo "---- journal of grmd.service, grm-echo.service and grm-quic.service"
    inside journalctl --no-pager -o short-monotonic -u grmd.service -u grm-echo.service \
        -u grm-quic.service 2>/dev/null | tail -80
fi
log "total $(($(now_ms) - t_start)) ms"
if [ "$rc" -eq 0 ]; then
    log "OK"
else
    log "FAIL"
fi
exit "$rc"
