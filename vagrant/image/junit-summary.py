#!/usr/bin/env python3
"""Summarise a pytest junit.xml: counts, then each failure with its message."""
import sys
import xml.etree.ElementTree as ET

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
                msg = (el.get("message") or el.text or "").strip().splitlines()
                bad.append((kind, f"{case.get('classname')}::{case.get('name')}", msg[0][:300] if msg else ""))
passed = total["tests"] - total["failures"] - total["errors"] - total["skipped"]
print(f"[vm] guest tests: {passed} passed, {total['failures']} failed, "
      f"{total['errors']} errors, {total['skipped']} skipped")
for kind, name, msg in bad:
    print(f"    {kind.upper()}: {name}\n        {msg}")
