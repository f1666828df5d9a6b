#!/usr/bin/env python3
"""Runs every test case of a Catch2 binary in a process of its own, and reports TAP to meson.

    run_cases.py [--timeout S] [--logdir DIR] BIN [PATTERN...]

The cases come from the binary itself (`BIN --list-tests`), so a new TEST_CASE runs without
being listed anywhere. A case is named by its own tag: the tag that no other case of the
binary carries (the longest, if it has several); a case without one fails, as it could not be
selected alone. Each runs as `BIN -w NoTests [tag]`: the binary's main enters a fresh sandbox
(namespaces, bpffs, cgroup2, its own grmd) per process. Output: `ok N - tag`, `ok N - tag #
SKIP why` (exit 77), `not ok N - tag` with the case's output on stderr. One case only:
PATTERN (shell glob on the tag), or GRM_CASES="pattern ..." in the environment. Each case's
output is kept in DIR/<binary>/<tag>.log with --logdir. Exits 0 unless the runner itself
fails: meson reads the verdicts from TAP.
"""
import argparse
import fnmatch
import os
import re
import signal
import subprocess
import sys
import time

SKIP_RC = 77
child = None  # the case's process, for the signal handler


def stop(proc, grace=5.0):
    """SIGTERM to the case's process group (its grmd and helpers too), SIGKILL after grace."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            pass


def on_signal(signum, _frame):
    # meson stops a test by signalling its process group; the cases run in sessions of
    # their own, so pass it on before leaving.
    if child is not None and child.poll() is None:
        stop(child)
    sys.exit(128 + signum)


def run(cmd, timeout):
    """(exit status or None on timeout, combined output, seconds)."""
    global child
    start = time.monotonic()
    child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = child.communicate(timeout=timeout)
        rc = child.returncode
    except subprocess.TimeoutExpired:
        stop(child)
        out, _ = child.communicate()
        rc = None
    child = None
    return rc, out.decode(errors="replace"), time.monotonic() - start


def list_cases(binary, timeout):
    """[(tag or None, test name)] from Catch2's --list-tests, or a skip reason (exit 77)."""
    rc, out, _ = run([binary, "--list-tests"], timeout)
    lines = out.splitlines()
    if "All available test cases:" not in lines:
        if rc == SKIP_RC:
            why = [l for l in lines if l.startswith("SKIP")]
            return None, (why[0] if why else "exit 77").removeprefix("SKIP: ")
        sys.exit(f"run_cases: {binary} --list-tests exited {rc}:\n{out}")
    # Catch2 2.x prints each name at indent 2 (continued at 4) and its tags at indent 6,
    # wrapped at 80 columns.
    cases = []
    for line in lines[lines.index("All available test cases:") + 1:]:
        indent = len(line) - len(line.lstrip(" "))
        if indent == 2:
            cases.append([line.strip(), ""])
        elif indent == 4 and cases:
            cases[-1][0] += " " + line.strip()
        elif indent == 6 and cases:
            cases[-1][1] += line.strip()
    tag_lists = [re.findall(r"\[([^\]]+)\]", tags) for _, tags in cases]
    uses = {}
    for tags in tag_lists:
        for t in tags:
            uses[t] = uses.get(t, 0) + 1
    result = []
    for (name, _), tags in zip(cases, tag_lists):
        own = sorted((t for t in tags if uses[t] == 1), key=lambda t: (-len(t), t))
        result.append((own[0] if own else None, name))
    return result, None


def main():
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--timeout", type=float, default=120, help="seconds per case")
    ap.add_argument("--logdir", help="keep each case's output in DIR/<binary>/<tag>.log")
    ap.add_argument("binary")
    ap.add_argument("patterns", nargs="*", help="run only the cases whose tag matches")
    args = ap.parse_args()

    print("TAP version 13", flush=True)
    cases, skip = list_cases(args.binary, 60)
    if cases is None:
        print(f"1..0 # SKIP {skip}")
        return 0
    patterns = args.patterns or os.environ.get("GRM_CASES", "").split()
    if patterns:
        chosen = [c for c in cases if c[0] and any(fnmatch.fnmatchcase(c[0], p) for p in patterns)]
        if not chosen:
            if args.patterns:  # asked on the command line: a typo must not pass
                print("1..1")
                print(f"not ok 1 - {' '.join(patterns)} # matches no case")
            else:
                print(f"1..0 # SKIP GRM_CASES matches no case of {os.path.basename(args.binary)}")
            return 0
        cases = chosen

    logdir = None
    if args.logdir:
        logdir = os.path.join(args.logdir, os.path.basename(args.binary))
        os.makedirs(logdir, exist_ok=True)
    print(f"1..{len(cases)}", flush=True)
    for n, (tag, name) in enumerate(cases, 1):
        if tag is None:
            print(f"not ok {n} - {name.replace('#', '')}")  # '#' would start a directive
            print(f"# {name!r}: no tag of its own, so it cannot run alone: give it one")
            continue
        rc, out, secs = run([args.binary, "-w", "NoTests", f"[{tag}]"], args.timeout)
        if logdir:
            with open(os.path.join(logdir, tag + ".log"), "w") as f:
                f.write(out)
        if rc == 0:
            print(f"ok {n} - {tag}")
        elif rc == SKIP_RC:
            why = [l for l in out.splitlines() if l.startswith("SKIP")]
            print(f"ok {n} - {tag} # SKIP {(why[0] if why else 'exit 77').removeprefix('SKIP: ')}")
        else:
            verdict = f"timed out after {args.timeout:g} s" if rc is None else f"exited {rc}"
            print(f"not ok {n} - {tag}")
            print(f"# {tag}: {verdict}")
            sys.stderr.write(f"==== {tag} ({name}): {verdict}; its output:\n{out}\n")
            sys.stderr.flush()
        print(f"# {tag}: {secs:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
