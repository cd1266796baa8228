#!/usr/bin/env python3
"""Summarise a pytest junit.xml: counts, then each failure with its message.

For a notebook cell (nbval) the message is generic; the useful line is the
cell's own ("Cell 3: Timeout ...", "Cell outputs differ") or the last error.
"""
import re
import sys
import xml.etree.ElementTree as ET

ANSI = re.compile(r"\x1b\[[0-9;]*m|#x1B\[[0-9;]*m")


def reason(el) -> str:
    msg = ANSI.sub("", el.get("message") or "").strip()
    text = ANSI.sub("", el.text or "")
    if "Notebook cell execution failed" in msg or not msg:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        cell = next((ln for ln in lines if re.match(r"Cell \d+: ", ln)), "")
        err = [ln for ln in lines if re.search(r"(Error|Exception|non-zero exit|^[-+] )", ln)]
        last = err[-1] if err else ""
        if len(last) > 200:  # a failed %%bash quotes the whole cell: keep its end
            last = last.split(":", 1)[0] + ": ... " + last[-90:]
        msg = " | ".join(x for x in (cell, last) if x)
    return msg.splitlines()[0][:400] if msg else ""


root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
total = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
bad = []
for s in suites:
    for k in total:
        total[k] += int(s.get(k, 0))
    for case in s.iter("testcase"):
        for kind in ("failure", "error"):
            el = case.find(kind)
            if el is not None:
                bad.append((kind, f"{case.get('classname')}::{case.get('name')}", reason(el)))
passed = total["tests"] - total["failures"] - total["errors"] - total["skipped"]
print(f"[vm] guest tests: {passed} passed, {total['failures']} failed, "
      f"{total['errors']} errors, {total['skipped']} skipped (xfail counted as skipped)")
for kind, name, msg in bad:
    print(f"    {kind.upper()}: {name}\n        {msg}")
