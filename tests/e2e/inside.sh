#!/bin/bash
# The container half of systemd-e2e.sh: runs inside the booted Debian 12 (systemd as PID 1).
# Installs grm from /opt/grm-e2e/stage, starts grmd.service and the example grm-echo.service
# (with its shipped drop-in), drives UDP load at it over the container's loopback, restarts it
# RESTARTS times with `systemctl restart`, and checks: no packet lost, no flow moved between
# instances, every old instance drained and exited, the new one serving. Results and logs go
# to /opt/grm-e2e-results. Exit 0 only if every check held.
set -uo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
stage=/opt/grm-e2e/stage
out=/opt/grm-e2e-results
restarts=${GRM_E2E_RESTARTS:-4}
addr=127.0.0.1:5300 # the drop-in's GRM_ECHO_ADDRESS
failures=0

say() { echo "e2e: $*"; }
fail() { echo "e2e: FAIL: $*"; failures=$((failures + 1)); }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# Polls CMD until it succeeds or SECS pass.
wait_until() {
    local secs=$1
    shift
    local end=$(($(now_ms) + secs * 1000))
    until "$@" >/dev/null 2>&1; do
        [ "$(now_ms)" -lt "$end" ] || return 1
        sleep 0.05
    done
}

# One field of the group's JSON (grmctl list --json), by a tiny Python-free extraction: grmctl
# prints pretty JSON, and these are all unsigned integers.
group_json() { grmctl list --json "$addr"; }
working_gen() { group_json | tr -d ' \n' | sed -n 's/.*"working_gen":\[\([0-9]*\)\].*/\1/p'; }
# "taking_new_flows" of the generation gen G (the per-generation key, not the per-socket ones).
taking_new_flows() {
    group_json | tr -d ' \n' | grep -o '"slot":[0-9]*,"gen":'"$1"',"working_for_apps":\[[0-9,]*\],"live_sockets":[0-9]*,"new_flow_sockets":[0-9]*,"taking_new_flows":[0-9]*' |
        sed -n 's/.*"taking_new_flows":\([0-9]*\)$/\1/p'
}
app_pid_of() { pgrep -P "$1" -x grm-echo | head -1; }

# ---- install, as a package would ----------------------------------------------------------
cp -a "$stage/usr/local/." /usr/local/
ldconfig
# On a host systemd mounts bpffs at /sys/fs/bpf; nspawn's /sys has none: the host side bound
# a private bpffs instance there.
mountpoint -q /sys/fs/bpf || { fail "no bpffs at /sys/fs/bpf"; exit 1; }
install -m 0644 "$stage/units/grmd.service" "$stage/units/grm-echo.service" /etc/systemd/system/
install -D -m 0644 "$stage/units/grm-echo.service.d/local.conf" \
    /etc/systemd/system/grm-echo.service.d/local.conf
systemctl daemon-reload

# ---- grmd.service --------------------------------------------------------------------------
t0=$(now_ms)
if ! systemctl start grmd.service; then
    fail "grmd.service did not start"
    systemctl status grmd.service --no-pager
    journalctl -u grmd.service --no-pager -o cat | tail -30
    exit 1
fi
say "grmd.service active after $(($(now_ms) - t0)) ms (Type=notify: READY=1 received)"
grmd_pid=$(systemctl show -p MainPID --value grmd.service)
cap_eff=$(awk '/^CapEff/ {print $2}' "/proc/$grmd_pid/status")
# CAP_NET_ADMIN 12, CAP_SYS_PTRACE 19, CAP_PERFMON 38, CAP_BPF 39
[ "$cap_eff" = "000000c000081000" ] || fail "grmd runs with CapEff $cap_eff, want 000000c000081000"
[ "$(awk '/^NoNewPrivs/ {print $2}' "/proc/$grmd_pid/status")" = 1 ] || fail "grmd without NoNewPrivileges"
[ "$(systemctl show -p WatchdogUSec --value grmd.service)" = 10s ] || fail "grmd watchdog not set"
say "grmd pid $grmd_pid: CapEff $cap_eff (bpf perfmon net_admin sys_ptrace), NoNewPrivs 1"

# ---- the example service ------------------------------------------------------------------
t0=$(now_ms)
if ! systemctl start grm-echo.service; then
    fail "grm-echo.service did not start"
    journalctl --no-pager -o cat -u grmd.service -u grm-echo.service | tail -30
    journalctl --no-pager -o cat -u grmd.service | grep -q "pidfd_open [0-9]*: No such process" &&
        echo "e2e: grmd runs in the container's pid namespace but the hooks report pids of the" \
            "initial one: grmd must find the socket by its cookie (daemon/registry.cpp find_socket)"
    exit 1
fi
say "grm-echo.service active after $(($(now_ms) - t0)) ms"
# The journal: what a unit printed, once journald has read it.
journal_has() { journalctl -o cat -u grm-echo.service --no-pager | grep -q "$1"; }
wait_until 10 journal_has "ready gen 1 port 5300 sockets 4 pid [0-9]* inherited yes" ||
    fail "grm-echo did not take the 4 inherited sockets"
[ "$(working_gen)" = 1 ] || fail "working generation $(working_gen), want 1"
group_json | grep -q '"label": "echo"' || fail "the drop-in's --tubular=echo is not the group's label"
group_json | grep -q '"flow_timeout_sec": 30' || fail "the drop-in's --flow-timeout=30 is not set"

# ---- load and restarts ---------------------------------------------------------------------
rm -f /run/grm-e2e-stop
grm-e2e-load --target "$addr" --flows 40 --packets 50 --interval-ms 10 --duration-s 90 \
    --grace-ms 3000 --stop-file /run/grm-e2e-stop >"$out/load.json" 2>"$out/load.err" &
load=$!
# Under way: the group counted traffic.
rx() { grmctl metrics | sed -n "s/^grm_rx_processed_total{socket=\"$addr\"} \([0-9]*\)$/\1/p"; }
rx_at_least() { [ "$(rx)" -ge "$1" ] 2>/dev/null; }
wait_until 20 rx_at_least 2000 || fail "no load reaching the service"
say "load running: $(rx) packets so far"

for i in $(seq 1 "$restarts"); do
    gen=$(working_gen)
    decoy=$(systemctl show -p MainPID --value grm-echo.service)
    app=$(app_pid_of "$decoy")
    [ -n "$app" ] || fail "restart $i: no grm-echo under the decoy $decoy"
    t0=$(now_ms)
    systemctl restart grm-echo.service || fail "restart $i: systemctl restart failed"
    t_restart=$(($(now_ms) - t0))
    new_decoy=$(systemctl show -p MainPID --value grm-echo.service)
    new_gen=$(working_gen)
    [ "$(systemctl is-active grm-echo.service)" = active ] || fail "restart $i: not active"
    [ "$new_decoy" != "$decoy" ] || fail "restart $i: same main process"
    [ "$new_gen" = $((gen + 1)) ] || fail "restart $i: working generation $new_gen, want $((gen + 1))"
    # The old instance still serves when the new one takes over: it drains only once quiet.
    alive=no
    kill -0 "$app" 2>/dev/null && alive=yes
    [ "$alive" = yes ] || fail "restart $i: old grm-echo $app was gone before the new one took over"
    # The old instance drains and exits on its own.
    t1=$(now_ms)
    if wait_until 20 sh -c "! kill -0 $app"; then
        drained_ms=$(($(now_ms) - t1))
    else
        fail "restart $i: old grm-echo $app (gen $gen) still running after 20 s"
        drained_ms=-1
    fi
    wait_until 10 journal_has "^drained gen $gen:" ||
        fail "restart $i: no 'drained gen $gen' from the old instance"
    [ "$(taking_new_flows "$new_gen")" = 4 ] ||
        fail "restart $i: gen $new_gen has $(taking_new_flows "$new_gen") sockets taking new flows, want 4"
    new_app=$(app_pid_of "$new_decoy")
    [ -n "$new_app" ] && kill -0 "$new_app" || fail "restart $i: no new grm-echo serving"
    say "restart $i: gen $gen -> $new_gen in $t_restart ms; old app $app alive at switch: $alive, exited $drained_ms ms later; new app $new_app"
done

touch /run/grm-e2e-stop
wait_until 30 sh -c "! kill -0 $load" || fail "load did not stop"
wait "$load"
load_json=$(cat "$out/load.json")
say "load: $load_json"
field() { echo "$load_json" | sed -n "s/.*\"$1\": \([0-9]*\).*/\1/p"; }
[ -n "$(field sent)" ] || fail "no load result"
[ "$(field sent)" -ge 5000 ] 2>/dev/null || fail "too little load: $(field sent) packets"
[ "$(field lost)" = 0 ] || fail "$(field lost) packets lost"
[ "$(field flows_moved)" = 0 ] || fail "$(field flows_moved) flows moved between instances"
[ "$(field flows_unanswered)" = 0 ] || fail "$(field flows_unanswered) flows never answered"
[ "$(field duplicates)" = 0 ] && [ "$(field bad)" = 0 ] && [ "$(field send_errors)" = 0 ] ||
    fail "duplicates/bad answers/send errors"
final_gen=$(working_gen)
echo "$load_json" | grep -q "\"$final_gen\": [1-9]" || fail "the last generation $final_gen served nothing"
gens=$(echo "$load_json" | grep -o '"per_gen": {[^}]*}' | grep -o '"[0-9]*":' | wc -l)
[ "$gens" -eq $((restarts + 1)) ] || fail "$gens generations served, want $((restarts + 1))"

[ "$(systemctl show -p NRestarts --value grm-echo.service)" = 0 ] || fail "grm-echo.service crashed and was restarted"
[ "$(systemctl show -p NRestarts --value grmd.service)" = 0 ] || fail "grmd.service was restarted (watchdog?)"
[ "$(systemctl show -p MainPID --value grmd.service)" = "$grmd_pid" ] || fail "grmd changed pid"
[ "$(pgrep -x grm-echo | wc -l)" = 1 ] || fail "$(pgrep -x grm-echo | wc -l) grm-echo processes, want 1"
grmctl list "$addr" >"$out/grmctl-list.txt"

journalctl -o short-monotonic --no-pager -u grmd.service -u grm-echo.service >"$out/journal.txt" 2>&1
say "$failures failure(s)"
[ "$failures" -eq 0 ]
