#!/usr/bin/python3
"""Re-makes the expected renderings of the feature templates in this folder with the reference
renderer (../../../../shared/tools/render_chat_template.py: Python's jinja2 configured as the
transformers library configures it). For each NAME.jinja and case.json it writes NAME.txt (the
exact rendering) or, where jinja2 refuses, NAME.error (its message; for errors that are not
TemplateErrors, e.g. TypeError, the exception's message).
usage: /usr/bin/python3 tests/data/jinja/render_expected.py  (needs Debian's python3-jinja2)
"""
import glob, os, subprocess, sys

here = os.path.dirname(os.path.abspath(__file__))
renderer = os.path.join(here, "..", "..", "..", "..", "shared", "tools", "render_chat_template.py")
for path in sorted(glob.glob(os.path.join(here, "*.jinja"))):
    stem = path[:-len(".jinja")]
    r = subprocess.run(["/usr/bin/python3", renderer, path, os.path.join(here, "case.json")],
                       capture_output=True)
    for ext in (".txt", ".error"):
        if os.path.exists(stem + ext):
            os.remove(stem + ext)
    if r.returncode == 0:
        with open(stem + ".txt", "wb") as f:
            f.write(r.stdout)
        continue
    err = r.stderr.decode().strip()
    msg = err[len("ERROR: "):] if r.returncode == 3 else err.splitlines()[-1].split(": ", 1)[1]
    with open(stem + ".error", "wb") as f:
        f.write(msg.encode() + b"\n")
