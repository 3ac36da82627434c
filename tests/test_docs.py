"""README.md and docs/*.md stay honest: the README is a short newcomer's page, every relative link
leads to a file, every `python -m paddle_rtseg.<command>` is a real command (a key of COMMANDS in
paddle_rtseg/cli/__init__.py, read with ast, without importing paddle_rtseg), and every `scripts/...`
or `deploy/...` path the pages name exists. Reads text only (about 0.1 s)."""
import ast
import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
PAGES = [README] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
MAX_README_LINES = 200

# [text](target) and ![alt](target); the target ends at whitespace or ')'
LINK = re.compile(r"!?\[[^\]]*\]\(\s*([^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
# `python -m paddle_rtseg.X`, also with the module on the next line
COMMAND = re.compile(r"python3?\s+-m\s+paddle_rtseg\.([A-Za-z_][\w.]*)")
# scripts/x.py, deploy/python/infer.py, deploy/lite/cpp/ ... (not part of a longer path or URL)
REPO_PATH = re.compile(r"(?<![\w/.\-])((?:scripts|deploy)/[\w./\-]*[\w/])")


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def rel(path):
    return os.path.relpath(path, ROOT)


def commands():
    """The keys of ``COMMANDS`` in paddle_rtseg/cli/__init__.py, parsed, not imported."""
    tree = ast.parse(read(os.path.join(ROOT, "paddle_rtseg", "cli", "__init__.py")))
    for node in ast.walk(tree):
        targets = getattr(node, "targets", None) or [getattr(node, "target", None)]
        if any(isinstance(t, ast.Name) and t.id == "COMMANDS" for t in targets):
            return set(ast.literal_eval(node.value))
    raise AssertionError("no COMMANDS = {...} in paddle_rtseg/cli/__init__.py")


def test_pages_exist():
    names = {os.path.basename(p) for p in PAGES[1:]}
    for page in ("models.md", "deployment.md", "benchmarks.md", "trust.md", "arm.md",
                 "development.md", "camvid.md"):
        assert page in names, "docs/{} is missing".format(page)


def test_readme_is_short():
    n = len(read(README).splitlines())
    assert n <= MAX_README_LINES, "README.md has {} lines; at most {}: move details to docs/".format(
        n, MAX_README_LINES)


def test_readme_gives_the_ci_test_command():
    """README's test command is the one CI runs (.ci/run ends in `make test`)."""
    ci = read(os.path.join(ROOT, ".ci", "run"))
    assert re.search(r"^make test\s*$", ci, re.M), ".ci/run no longer runs `make test`"
    assert re.search(r"^make test\b", read(README), re.M)
    assert re.search(r"^make demo\b", read(README), re.M)


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_relative_links_point_to_files(page):
    broken = []
    for target in LINK.findall(read(page)):
        if re.match(r"[a-z][a-z0-9+.\-]*:", target) or target.startswith("#"):
            continue  # a URL, mailto:, or an anchor in the same page
        path = os.path.normpath(os.path.join(os.path.dirname(page), target.split("#")[0]))
        if not os.path.exists(path):
            broken.append(target)
    assert not broken, "{}: links to missing files: {}".format(rel(page), broken)


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_named_commands_exist(page):
    known = commands()
    named = set(COMMAND.findall(read(page)))
    unknown = sorted(name for name in named if name not in known)
    assert not unknown, ("{}: `python -m paddle_rtseg.<command>` names no command for {}; the "
                         "commands are the keys of COMMANDS in paddle_rtseg/cli/__init__.py: {}"
                         .format(rel(page), unknown, sorted(known)))


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_named_scripts_and_runners_exist(page):
    missing = sorted({p for p in REPO_PATH.findall(read(page))
                      if not os.path.exists(os.path.join(ROOT, p.rstrip("/")))})
    assert not missing, "{}: names paths that do not exist: {}".format(rel(page), missing)


def test_the_checks_find_what_they_look_for():
    """The patterns catch the forms the pages use (so an empty match cannot pass silently)."""
    sample = ("see [a](docs/x.md) and ![p](bench.png \"t\"); `python -m paddle_rtseg.train --config c`,"
              " `python -m\npaddle_rtseg.bench_deploy`; python scripts/camvid_table.py, "
              "deploy/lite/cpp/, https://host/scripts/no.py, output/deploy/x")
    assert LINK.findall(sample) == ["docs/x.md", "bench.png"]
    assert COMMAND.findall(sample) == ["train", "bench_deploy"]
    assert REPO_PATH.findall(sample) == ["scripts/camvid_table.py", "deploy/lite/cpp/"]
    assert {"train", "export", "bench_deploy"} <= commands()
