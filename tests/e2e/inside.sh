#!/bin/bash
# The container half of systemd-e2e.sh: runs inside the booted Debian 12 (systemd as PID 1).
# Installs grm from /opt/grm-e2e/stage (install_grm), starts grmd.service (the shipped unit,
# its exact capabilities), then the scenarios, each on a port of its own:
#   echo-root, echo-user, echo-dynamic   the example grm-echo.service with its shipped drop-in,
#       as root, with the shipped user.conf (User=, a static system user created here) and
#       with dynamic-user.conf (DynamicUser=yes): UDP load over the container's loopback,
#       RESTARTS x `systemctl restart`; no packet lost, no flow moved between instances, every
#       old instance drained and exited, the new one serving, the app under the right uid.
#   quic-restart, quic-reload            the example grm-quic.service (HTTP/3): waves of real
#       gtlsclient connections holding delayed requests (grm-e2e-quic) across 3 x `systemctl
#       restart`, then 3 x `systemctl reload` (each followed by a SIGTERM to the old server
#       while it drains, as a script or a container runtime would send); 0 failed connections,
#       0 lost requests, every old instance drained with 0 cut and exited.
# Results and logs go to /opt/grm-e2e-results. Exit 0 only if every check held.
#
# `inside.sh --quic-action restart|reload` is the action grm-e2e-quic runs between its waves.
set -uo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
stage=/opt/grm-e2e/stage
out=/opt/grm-e2e-results
restarts=${GRM_E2E_RESTARTS:-4}
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

# One field of the group's JSON (grmctl list --json ADDR), by a tiny Python-free extraction:
# grmctl prints pretty JSON, and these are all unsigned integers.
group_json() { grmctl list --json "$1"; }
working_gen() { group_json "$1" | tr -d ' \n' | sed -n 's/.*"working_gen":\[\([0-9]*\)\].*/\1/p'; }
# "taking_new_flows" of generation G of ADDR (the per-generation key, not the per-socket ones).
taking_new_flows() {
    group_json "$1" | tr -d ' \n' | grep -o '"slot":[0-9]*,"gen":'"$2"',"working_for_apps":\[[0-9,]*\],"live_sockets":[0-9]*,"new_flow_sockets":[0-9]*,"taking_new_flows":[0-9]*' |
        sed -n 's/.*"taking_new_flows":\([0-9]*\)$/\1/p'
}
uid_of() { awk '/^Uid:/ {print $2}' "/proc/$1/status" 2>/dev/null; }
main_pid() { systemctl show -p MainPID --value "$1"; }
# The unit's journal since a cursor (each scenario reads only its own lines).
cursor() { journalctl -n 0 --show-cursor --no-pager | sed -n 's/^-- cursor: //p'; }
journal_since() { journalctl -o cat --no-pager --after-cursor="$1" -u "$2"; }

# ---- install, as a package would (later: the .debs of debian/) ------------------------------
install_grm() {
    cp -a "$stage/usr/local/." /usr/local/
    ldconfig
    install -m 0644 "$stage/units/grmd.service" "$stage/units/grm-echo.service" \
        "$stage/units/grm-quic.service" /etc/systemd/system/
    install -d /etc/grm-e2e-dropins
    install -m 0644 "$stage/units/grm-echo.service.d/"*.conf /etc/grm-e2e-dropins/
    systemctl daemon-reload
}

# ---- grmd.service ----------------------------------------------------------------------------
start_grmd() {
    local t0 cap_eff
    t0=$(now_ms)
    if ! systemctl start grmd.service; then
        fail "grmd.service did not start"
        systemctl status grmd.service --no-pager
        journalctl -u grmd.service --no-pager -o cat | tail -30
        return 1
    fi
    say "grmd.service active after $(($(now_ms) - t0)) ms (Type=notify: READY=1 received)"
    grmd_pid=$(main_pid grmd.service)
    cap_eff=$(awk '/^CapEff/ {print $2}' "/proc/$grmd_pid/status")
    # CAP_NET_ADMIN 12, CAP_SYS_PTRACE 19, CAP_PERFMON 38, CAP_BPF 39
    [ "$cap_eff" = "000000c000081000" ] || fail "grmd runs with CapEff $cap_eff, want 000000c000081000"
    [ "$(awk '/^NoNewPrivs/ {print $2}' "/proc/$grmd_pid/status")" = 1 ] || fail "grmd without NoNewPrivileges"
    [ "$(uid_of "$grmd_pid")" = 0 ] || fail "grmd runs as uid $(uid_of "$grmd_pid")"
    [ "$(systemctl show -p WatchdogUSec --value grmd.service)" = 10s ] || fail "grmd watchdog not set"
    say "grmd pid $grmd_pid: CapEff $cap_eff (bpf perfmon net_admin sys_ptrace), NoNewPrivs 1"
}

# ---- grm-echo.service under load, restarted -------------------------------------------------
# echo_scenario NAME PORT [DROPIN]: DROPIN is user.conf or dynamic-user.conf (none: root).
echo_scenario() {
    local name=$1 port=$2 dropin=${3:-} addr=127.0.0.1:$2 cur t0 load want_uid="" app_uid
    local first_uid="" i gen decoy app t_restart new_decoy new_gen alive t1 drained_ms new_app
    say "---- $name: grm-echo.service on $addr${dropin:+ with $dropin}"
    rm -rf /etc/systemd/system/grm-echo.service.d
    install -d /etc/systemd/system/grm-echo.service.d
    install -m 0644 /etc/grm-e2e-dropins/local.conf /etc/systemd/system/grm-echo.service.d/
    [ -n "$dropin" ] && install -m 0644 "/etc/grm-e2e-dropins/$dropin" /etc/systemd/system/grm-echo.service.d/
    printf '[Service]\nEnvironment=GRM_ECHO_ADDRESS=%s\n' "$addr" \
        >/etc/systemd/system/grm-echo.service.d/zz-e2e-port.conf
    systemctl daemon-reload
    [ "$dropin" = user.conf ] && want_uid=$(id -u grm-echo)
    cur=$(cursor)
    jhas() { journal_since "$cur" grm-echo.service | grep -q "$1"; }
    app_pid_of() { pgrep -P "$1" -x grm-echo | head -1; }

    t0=$(now_ms)
    if ! systemctl start grm-echo.service; then
        fail "$name: grm-echo.service did not start"
        journalctl --no-pager -o cat -u grmd.service -u grm-echo.service | tail -30
        return 1
    fi
    say "$name: grm-echo.service active after $(($(now_ms) - t0)) ms"
    wait_until 10 jhas "ready gen 1 port $port sockets 4 pid [0-9]* inherited yes" ||
        fail "$name: grm-echo did not take the 4 inherited sockets"
    [ "$(working_gen "$addr")" = 1 ] || fail "$name: working generation $(working_gen "$addr"), want 1"
    group_json "$addr" | grep -q '"label": "echo"' || fail "$name: the drop-in's --tubular=echo is not the group's label"
    group_json "$addr" | grep -q '"flow_timeout_sec": 30' || fail "$name: the drop-in's --flow-timeout=30 is not set"

    # The kernel's UDP drop counters of the container's network namespace, around the load.
    udp_counters() { awk '/^Udp:/ { if (!h) { split($0, k); h = 1 } else { split($0, v); for (i = 2; i <= NF; i++) if (k[i] ~ /Errors|NoPorts/) printf "%s %s ", k[i], v[i] } }' /proc/net/snmp; }
    local udp_before
    udp_before=$(udp_counters)
    rm -f /run/grm-e2e-stop
    grm-e2e-load --target "$addr" --flows 40 --packets 50 --interval-ms 10 --duration-s 90 \
        --grace-ms 3000 --stop-file /run/grm-e2e-stop >"$out/$name-load.json" 2>"$out/$name-load.err" &
    load=$!
    rx() { grmctl metrics | sed -n "s/^grm_rx_processed_total{socket=\"$addr\"} \([0-9]*\)$/\1/p"; }
    rx_at_least() { [ "$(rx)" -ge "$1" ] 2>/dev/null; }
    wait_until 20 rx_at_least 2000 || fail "$name: no load reaching the service"
    say "$name: load running: $(rx) packets so far"

    for i in $(seq 1 "$restarts"); do
        gen=$(working_gen "$addr")
        decoy=$(main_pid grm-echo.service)
        app=$(app_pid_of "$decoy")
        [ -n "$app" ] || fail "$name: restart $i: no grm-echo under the decoy $decoy"
        # Who the app runs as: root, the static user, or the one uid systemd allocates.
        app_uid=$(uid_of "$app")
        if [ -n "$want_uid" ]; then
            [ "$app_uid" = "$want_uid" ] || fail "$name: grm-echo runs as uid $app_uid, want $want_uid (grm-echo)"
        elif [ "$dropin" = dynamic-user.conf ]; then
            [ "$app_uid" -ge 61184 ] && [ "$app_uid" -le 65519 ] 2>/dev/null ||
                fail "$name: grm-echo runs as uid $app_uid, not a dynamic one (61184-65519)"
            first_uid=${first_uid:-$app_uid}
            [ "$app_uid" = "$first_uid" ] || fail "$name: dynamic uid changed from $first_uid to $app_uid"
        else
            [ "$app_uid" = 0 ] || fail "$name: grm-echo runs as uid $app_uid, want 0"
        fi
        t0=$(now_ms)
        systemctl restart grm-echo.service || fail "$name: restart $i: systemctl restart failed"
        t_restart=$(($(now_ms) - t0))
        new_decoy=$(main_pid grm-echo.service)
        new_gen=$(working_gen "$addr")
        [ "$(systemctl is-active grm-echo.service)" = active ] || fail "$name: restart $i: not active"
        [ "$new_decoy" != "$decoy" ] || fail "$name: restart $i: same main process"
        [ "$new_gen" = $((gen + 1)) ] || fail "$name: restart $i: working generation $new_gen, want $((gen + 1))"
        # The old instance still serves when the new one takes over: it drains only once quiet.
        alive=no
        kill -0 "$app" 2>/dev/null && alive=yes
        [ "$alive" = yes ] || fail "$name: restart $i: old grm-echo $app was gone before the new one took over"
        t1=$(now_ms)
        if wait_until 20 sh -c "! kill -0 $app"; then
            drained_ms=$(($(now_ms) - t1))
        else
            fail "$name: restart $i: old grm-echo $app (gen $gen) still running after 20 s"
            drained_ms=-1
        fi
        wait_until 10 jhas "^drained gen $gen:" ||
            fail "$name: restart $i: no 'drained gen $gen' from the old instance"
        [ "$(taking_new_flows "$addr" "$new_gen")" = 4 ] ||
            fail "$name: restart $i: gen $new_gen has $(taking_new_flows "$addr" "$new_gen") sockets taking new flows, want 4"
        new_app=$(app_pid_of "$new_decoy")
        [ -n "$new_app" ] && kill -0 "$new_app" || fail "$name: restart $i: no new grm-echo serving"
        say "$name: restart $i: gen $gen -> $new_gen at $t0..$((t0 + t_restart)) ms (realtime) in $t_restart ms; old app $app (uid $app_uid) alive at switch: $alive, exited $drained_ms ms later; new app $new_app (uid $(uid_of "$new_app"))"
    done

    touch /run/grm-e2e-stop
    wait_until 30 sh -c "! kill -0 $load" || fail "$name: load did not stop"
    wait "$load"
    local load_json final_gen gens
    load_json=$(cat "$out/$name-load.json")
    field() { echo "$load_json" | sed -n "s/.*\"$1\": \([0-9]*\).*/\1/p"; }
    say "$name: packets sent $(field sent), answered $(field answered), lost $(field lost); flows moved $(field flows_moved), never answered $(field flows_unanswered)"
    say "$name: load: $load_json"
    say "$name: UDP counters before: $udp_before; after: $(udp_counters)"
    [ -n "$(field sent)" ] || fail "$name: no load result"
    [ "$(field sent)" -ge 5000 ] 2>/dev/null || fail "$name: too little load: $(field sent) packets"
    [ "$(field lost)" = 0 ] || fail "$name: $(field lost) packets lost"
    [ "$(field flows_moved)" = 0 ] || fail "$name: $(field flows_moved) flows moved between instances"
    [ "$(field flows_unanswered)" = 0 ] || fail "$name: $(field flows_unanswered) flows never answered"
    [ "$(field duplicates)" = 0 ] && [ "$(field bad)" = 0 ] && [ "$(field send_errors)" = 0 ] ||
        fail "$name: duplicates/bad answers/send errors"
    final_gen=$(working_gen "$addr")
    echo "$load_json" | grep -q "\"$final_gen\": [1-9]" || fail "$name: the last generation $final_gen served nothing"
    gens=$(echo "$load_json" | grep -o '"per_gen": {[^}]*}' | grep -o '"[0-9]*":' | wc -l)
    [ "$gens" -eq $((restarts + 1)) ] || fail "$name: $gens generations served, want $((restarts + 1))"
    [ "$(systemctl show -p NRestarts --value grm-echo.service)" = 0 ] || fail "$name: grm-echo.service crashed and was restarted"
    [ "$(pgrep -x grm-echo | wc -l)" = 1 ] || fail "$name: $(pgrep -x grm-echo | wc -l) grm-echo processes, want 1"
    grmctl list "$addr" >"$out/$name-grmctl-list.txt"
    journal_since "$cur" grm-echo.service >"$out/$name-journal.txt" 2>&1

    # Stopped, the last instance drains (no load: at once) and exits.
    systemctl stop grm-echo.service || fail "$name: systemctl stop failed"
    wait_until 20 sh -c '! pgrep -x grm-echo' || fail "$name: grm-echo still running 20 s after the stop"
    systemctl reset-failed grm-echo.service 2>/dev/null
}

# ---- grm-quic.service: HTTP/3 connections across restarts and reloads ----------------------
quic_port=4433
quic_addr=127.0.0.1:$quic_port
quic_servers() { pgrep -x grm-quic-server; }
# The action grm-e2e-quic runs; its exit status counts.
quic_action() {
    local gen old decoy new
    gen=$(working_gen "$quic_addr")
    decoy=$(main_pid grm-quic.service)
    # The serving instance is the decoy's newest child (replaced ones may still drain).
    newest_server() { pgrep -P "$(main_pid grm-quic.service)" -x grm-quic-server -n; }
    old=$(newest_server)
    case "$1" in
    restart)
        systemctl restart grm-quic.service || { echo "systemctl restart failed"; return 1; }
        [ "$(working_gen "$quic_addr")" = $((gen + 1)) ] || { echo "restart: gen $(working_gen "$quic_addr"), want $((gen + 1))"; return 1; }
        ;;
    reload)
        systemctl reload grm-quic.service || { echo "systemctl reload failed"; return 1; }
        # systemd 252 has no Type=notify-reload: the reload goes on after `systemctl reload`
        # returned (RELOADING=1 ... READY=1 from the decoy).
        gen_is() { [ "$(working_gen "$quic_addr")" = "$1" ]; }
        wait_until 15 gen_is $((gen + 1)) || { echo "reload: gen $(working_gen "$quic_addr"), want $((gen + 1))"; return 1; }
        [ "$(main_pid grm-quic.service)" = "$decoy" ] || { echo "reload: the main process changed"; return 1; }
        new=$(newest_server)
        [ -n "$new" ] && [ "$new" != "$old" ] || { echo "reload: no new server under the decoy"; return 1; }
        # The old server was sent SIGTERM by the decoy once the new one was ready; another
        # one now, while it drains (what a script or a container runtime sends), must not cut
        # its connections either.
        jdrain() { journalctl -o cat --no-pager -u grm-quic.service | grep -q "^draining gen $gen:"; }
        wait_until 5 jdrain || { echo "reload: gen $gen did not start draining"; return 1; }
        kill -TERM "$old" || { echo "reload: old server $old gone already"; return 1; }
        jlate() { journalctl -o cat --no-pager -u grm-quic.service | grep -q "^gen $gen: signal 15 while draining: the drain goes on"; }
        wait_until 5 jlate || { echo "reload: no 'signal 15 while draining' from gen $gen"; return 1; }
        ;;
    esac
}

quic_scenario() {
    local action=$1 name=quic-$1 gen0 final_gen g cur summary
    say "---- $name: grm-quic.service on $quic_addr, 3 x systemctl $action under HTTP/3 load"
    cur=$(cursor)
    gen0=$(working_gen "$quic_addr")
    grm-e2e-quic --host 127.0.0.1 --port "$quic_port" --actions 3 --interval-ms 2000 \
        --per-wave 8 --streams 4 --workdir "/tmp/$name" \
        --action "bash $stage/inside.sh --quic-action $action" >"$out/$name.txt" 2>&1
    local rc=$?
    sed "s/^/e2e: $name: /" "$out/$name.txt"
    [ "$rc" = 0 ] || fail "$name: grm-e2e-quic: connections failed, requests lost or an action failed"
    summary=$(grep '^total:' "$out/$name.txt")
    echo "$summary" | grep -q "failed 0 requests [1-9][0-9]* lost 0 split 0 actions 3 action_errors 0" ||
        fail "$name: $summary"
    echo "$summary" | grep -q "connections 24 " || fail "$name: $summary: want 24 connections"
    final_gen=$(working_gen "$quic_addr")
    [ "$final_gen" = $((gen0 + 3)) ] || fail "$name: working generation $final_gen, want $((gen0 + 3))"
    # Every old instance drained all its connections and exited; only the last one serves.
    wait_until 30 sh -c '[ "$(pgrep -x grm-quic-server | wc -l)" = 1 ]' ||
        fail "$name: $(quic_servers | wc -l) grm-quic-server processes 30 s later, want 1"
    drained_clean() {
        journal_since "$cur" grm-quic.service |
            grep -q "^drained gen $1: all connections closed; [0-9]* connections open at drain start, 0 cut"
    }
    for g in $(seq "$gen0" $((final_gen - 1))); do
        wait_until 10 drained_clean "$g" ||
            fail "$name: gen $g did not drain all its connections: $(journal_since "$cur" grm-quic.service | grep "^drained gen $g:")"
    done
    journal_since "$cur" grm-quic.service | grep "^drained gen" | sed "s/^/e2e: $name: /"
    [ "$(systemctl is-active grm-quic.service)" = active ] || fail "$name: grm-quic.service not active"
    [ "$(systemctl show -p NRestarts --value grm-quic.service)" = 0 ] || fail "$name: grm-quic.service crashed and was restarted"
    journal_since "$cur" grm-quic.service >"$out/$name-journal.txt" 2>&1
}

if [ "${1:-}" = --quic-action ]; then
    quic_action "$2"
    exit
fi

# ---- the run ---------------------------------------------------------------------------------
install_grm
# On a host systemd mounts bpffs at /sys/fs/bpf; nspawn's /sys has none: the host side bound
# a private bpffs instance there.
mountpoint -q /sys/fs/bpf || { fail "no bpffs at /sys/fs/bpf"; exit 1; }
start_grmd || exit 1

echo_scenario echo-root 5300
# DynamicUser=yes first: with no User=, it takes the unit's name, and a static user of that
# name (created below for User=) would be used instead of a dynamic one.
echo_scenario echo-dynamic 5302 dynamic-user.conf
useradd --system --no-create-home --home-dir / --shell /usr/sbin/nologin grm-echo ||
    { fail "useradd grm-echo"; exit 1; }
echo_scenario echo-user 5301 user.conf

# The HTTP/3 service: certificate, key and reset secret made on the host.
install -d -m 0755 /etc/grm-quic
install -m 0644 "$stage/quic/cert.pem" /etc/grm-quic/
install -m 0600 "$stage/quic/key.pem" "$stage/quic/reset.secret" /etc/grm-quic/
install -d /etc/systemd/system/grm-quic.service.d
# No --keep-alive: the clients do not move; the drain is bounded well above the longest delay.
printf '[Service]\nEnvironment="GRM_QUIC_OPTS=--drain-timeout 20s"\n' \
    >/etc/systemd/system/grm-quic.service.d/zz-e2e.conf
systemctl daemon-reload
t0=$(now_ms)
if systemctl start grm-quic.service; then
    quic_ready() { journalctl -o cat --no-pager -u grm-quic.service | grep -q "^ready gen 1 port $quic_port sockets 4 pid [0-9]* dissector quic cid_len 18 inherited yes"; }
    wait_until 10 quic_ready || fail "grm-quic-server did not take the 4 sockets grm-activate made"
    say "grm-quic.service active after $(($(now_ms) - t0)) ms"
    quic_scenario restart
    quic_scenario reload
else
    fail "grm-quic.service did not start"
    journalctl --no-pager -o cat -u grm-quic.service | tail -30
fi

[ "$(systemctl show -p NRestarts --value grmd.service)" = 0 ] || fail "grmd.service was restarted (watchdog?)"
[ "$(main_pid grmd.service)" = "$grmd_pid" ] || fail "grmd changed pid"
journalctl -o short-monotonic --no-pager -u grmd.service -u grm-echo.service -u grm-quic.service >"$out/journal.txt" 2>&1
say "$failures failure(s)"
[ "$failures" -eq 0 ]
