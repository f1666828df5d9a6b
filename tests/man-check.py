#!/usr/bin/env python3
"""Each man page against its program: every option the program's --help names (-x and
--long) appears in the page, and man(1) renders the page without a warning.
Usage: man-check.py PROGRAM PAGE [PROGRAM PAGE ...]"""
import os, re, subprocess, sys

args = sys.argv[1:]
if not args or len(args) % 2:
    sys.exit(__doc__)
errors = []
found_any = False
# An option as --help writes it: after a space, '[' or '/', before a space or one of "=,[/:)".
option = re.compile(r"(?:(?<=[\s\[/])|^)(--?[A-Za-z0-9][A-Za-z0-9-]*)(?=[\s=,\[/:)]|$)", re.M)
for program, page in zip(args[::2], args[1::2]):
    name = os.path.basename(program)
    help_text = subprocess.run([program, "--help"], capture_output=True, text=True,
                               check=True).stdout
    # Every program takes --help, whether its usage says so or not (grm-decoy's does not).
    wanted = sorted(set(option.findall(help_text)) | {"--help"})
    found_any = found_any or len(wanted) > 1
    roff = open(page).read()
    # The page as text: font changes and zero-width escapes out, \- as -.
    text = re.sub(r"\\f[BIRP]|\\&|\\e", "", roff).replace("\\-", "-")
    missing = [o for o in wanted if not re.search(re.escape(o) + r"(?![A-Za-z0-9-])", text)]
    for o in missing:
        errors.append(f"{name}: {o} is in --help but not in {os.path.basename(page)}")
    env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8")
    r = subprocess.run(["man", "--warnings", "-l", page], capture_output=True, text=True, env=env)
    if r.returncode != 0 or r.stderr.strip():
        errors.append(f"man --warnings -l {page}: exit {r.returncode}: {r.stderr.strip()}")
    print(f"{name}: {len(wanted) - len(missing)} of {len(wanted)} options in its man page")
if not found_any:
    errors.append("no program's --help named an option: is the pattern wrong?")
for e in errors:
    print("man-check:", e)
sys.exit(1 if errors else 0)
