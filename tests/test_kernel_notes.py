"""The kernel facts the code relies on live in this repository (docs/kernel-notes.md),
and every citation of that page names a section it has."""
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = os.path.join(REPO, "docs", "kernel-notes.md")


def sources():
    for top in ("helpers", "tests", "notebooks", "tools", "vagrant", "bench"):
        for d, dirs, files in os.walk(os.path.join(REPO, top)):
            dirs[:] = [x for x in dirs if x not in ("__pycache__", "learner") and not x.endswith(".egg-info")]
            for f in files:
                if f.endswith((".py", ".ipynb", ".sh", ".md", ".toml")):
                    yield os.path.join(d, f)


OLD_NAME = "KERNEL" + "-NOTES"  # a page that was never in the repository


def test_no_citation_of_a_page_outside_the_repository():
    stale = [os.path.relpath(p, REPO) for p in sources() if OLD_NAME in open(p).read()]
    assert not stale, f"cite docs/kernel-notes.md instead of {OLD_NAME} in {stale}"


def test_every_cited_section_exists():
    with open(PAGE) as f:
        sections = {m.group(1) for m in re.finditer(r"^## (.+)$", f.read(), re.M)}
    cited = set()
    for p in sources():
        text = open(p).read().replace('\\"', '"')
        cited |= {(m.group(1), os.path.relpath(p, REPO))
                  for m in re.finditer(r'kernel-notes\.md, "([^"]+)"', text)}
    assert cited, "the code cites the page"
    missing = [(s, where) for s, where in cited if s not in sections]
    assert not missing, f"sections cited but not in docs/kernel-notes.md: {missing}"
