#!/usr/bin/env python3
"""The layout's rules, checked on the build and the tree (README, "Where things are"):
1. no installed target links the test-support library (testing/) or test code;
2. no file of the product (bpf, daemon, libclient, include, common, tools, examples)
   includes a header of testing/;
3. daemon/ and libclient/ never include each other's headers.
Usage: layout-check.py SOURCE_ROOT BUILD_DIR"""
import json, os, re, subprocess, sys

src, build = sys.argv[1], sys.argv[2]
errors = []

targets = json.load(open(os.path.join(build, "meson-info", "intro-targets.json")))
for t in targets:
    if not t.get("installed"):
        continue
    for out in t["filename"]:
        rel = os.path.relpath(out, build)
        q = subprocess.run(["ninja", "-C", build, "-t", "query", rel],
                           capture_output=True, text=True)
        if q.returncode != 0:
            errors.append(f"ninja -t query {rel}: {q.stderr.strip()}")
            continue
        inputs = q.stdout.split("outputs:")[0]
        for line in inputs.splitlines():
            name = line.strip()
            if re.search(r"(^|/)(testing|tests)/", name) or "libgrm-testing" in name:
                errors.append(f"installed {rel} is built from test code: {name}")

def headers(folder):
    d = os.path.join(src, folder)
    return {f for f in os.listdir(d) if f.endswith((".hpp", ".h"))}

def sources(folders):
    for folder in folders:
        for root, _, files in os.walk(os.path.join(src, folder)):
            for f in files:
                if f.endswith((".c", ".h", ".cpp", ".hpp")):
                    yield os.path.join(root, f)

include = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
testing_headers = headers("testing")
product = ["bpf", "daemon", "libclient", "include", "common", "tools", "examples"]
for path in sources(product):
    rel = os.path.relpath(path, src)
    for inc in include.findall(open(path, errors="replace").read()):
        base = os.path.basename(inc)
        if inc.startswith("testing/") or (base in testing_headers and
                                           not os.path.exists(os.path.join(os.path.dirname(path), inc))):
            errors.append(f"{rel} includes test support {inc}")

for a, b in (("daemon", "libclient"), ("libclient", "daemon")):
    theirs = headers(b)
    for path in sources([a]):
        rel = os.path.relpath(path, src)
        for inc in include.findall(open(path, errors="replace").read()):
            if os.path.basename(inc) in theirs and not os.path.exists(
                    os.path.join(os.path.dirname(path), inc)):
                errors.append(f"{rel} includes {b}/'s {inc}")

for e in errors:
    print("layout:", e)
print(f"layout: {len(errors)} problem(s)")
sys.exit(1 if errors else 0)
