"""The one config reader against hostile YAML: alias bombs and cycles (generated widths and depths),
oversized files, Python tags anywhere (config, _base_ file, --opts; the safe loader never builds
them), ``_base_`` graphs with and without cycles (generated), deep nesting and unreadable values.
Each is one ConfigError naming the file and the fix, or loads as PaddleSeg would merge it."""
import itertools
import os
import time

import numpy as np
import pytest
import yaml
from conftest import CONFIGS, run_module

from paddle_rtseg.config import ConfigError, _read_yaml, load_config

SLIM_SYNTHETIC = os.path.join(CONFIGS, "rtformer", "rtformer_slim_synthetic_128x128_2k.yml")


def alias_bomb(width, depth):
    """``depth`` levels, each a list of ``width`` aliases of the level below: width**depth values."""
    lines = ['l0: &l0 [{}]'.format(", ".join(['"lol"'] * width))]
    for level in range(1, depth):
        lines.append("l{0}: &l{0} [{1}]".format(level, ", ".join(["*l{}".format(level - 1)] * width)))
    return "\n".join(lines) + "\n"


def expanded(width, depth):
    """Values once expanded: the top mapping, its keys, and each level's lists."""
    return 1 + depth + sum(sum(width ** k for k in range(level + 2)) for level in range(depth))


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return str(path)


def test_generated_alias_bombs_are_bounded(tmp_path):
    """Widths 2, 3, 5, 9 and depths 1..9 (up to 9**9 = 387 million values when expanded): those within
    PADDLE_RTSEG_MAX_CONFIG_VALUES load, the others are refused in well under a second each."""
    outcomes = {"loaded": 0, "refused": 0}
    for width, depth in itertools.product((2, 3, 5, 9), range(1, 10)):
        path = write(tmp_path / "bomb.yml", alias_bomb(width, depth))
        start = time.perf_counter()
        if expanded(width, depth) <= 100000:
            dic = _read_yaml(path)
            assert len(dic) == depth and dic["l0"] == ["lol"] * width
            outcomes["loaded"] += 1
        else:
            with pytest.raises(ConfigError, match="expands to more than 100000 values") as err:
                _read_yaml(path)
            assert "PADDLE_RTSEG_MAX_CONFIG_VALUES" in str(err.value)
            outcomes["refused"] += 1
        assert time.perf_counter() - start < 2, (width, depth)
    assert outcomes["loaded"] > 5 and outcomes["refused"] > 5, outcomes


def test_alias_cycles_and_the_limit_variable(tmp_path, monkeypatch):
    for text in ["a: &a [*a]\n", "a: &a {b: *a}\n", "a: &a [1, [2, *a]]\n"]:
        with pytest.raises(ConfigError, match="an alias inside its own anchor never ends"):
            _read_yaml(write(tmp_path / "cycle.yml", text))
    path = write(tmp_path / "bomb.yml", alias_bomb(9, 5))  # 74738 values: within the default
    assert len(_read_yaml(path)) == 5
    monkeypatch.setenv("PADDLE_RTSEG_MAX_CONFIG_VALUES", "1000")
    with pytest.raises(ConfigError, match="more than 1000 values"):
        _read_yaml(path)
    monkeypatch.setenv("PADDLE_RTSEG_MAX_CONFIG_VALUES", "-3")
    with pytest.raises(ValueError, match="PADDLE_RTSEG_MAX_CONFIG_VALUES must be a positive"):
        _read_yaml(path)


def test_file_size_is_bounded_before_parsing(tmp_path, monkeypatch):
    path = write(tmp_path / "big.yml", "batch_size: 2\n" + "# padding\n" * 110000)
    with pytest.raises(ConfigError, match="PADDLE_RTSEG_MAX_CONFIG_BYTES") as err:
        _read_yaml(path)
    assert str(os.path.getsize(path)) in str(err.value)
    small = write(tmp_path / "small.yml", "batch_size: 2\n" + "# padding\n" * 20)
    monkeypatch.setenv("PADDLE_RTSEG_MAX_CONFIG_BYTES", "100")
    with pytest.raises(ConfigError, match="is 214 bytes"):
        _read_yaml(small)
    monkeypatch.setenv("PADDLE_RTSEG_MAX_CONFIG_BYTES", "214")
    assert _read_yaml(small) == {"batch_size": 2}


TAGS = ["!!python/name:os.system", "!!python/object/apply:os.system ['touch {marker}']",
        "!!python/object/new:os.system ['touch {marker}']", "!!python/module:os",
        "!!python/tuple [1, 2]", "!!python/object:collections.OrderedDict {{}}",
        "!!python/name:builtins.eval", "!<tag:yaml.org,2002:python/name:os.system> ''"]


@pytest.mark.parametrize("where", ["config", "base", "opts"])
def test_python_tags_are_refused_everywhere(tmp_path, where):
    """Every Python tag, in the config, in its _base_ file or in --opts: refused naming the tag and
    where it is; none builds anything (the marker its command would create never appears)."""
    marker = tmp_path / "ran"
    for tag in TAGS:
        value = tag.format(marker=marker)
        base = write(tmp_path / "base.yml", "batch_size: 2\n" +
                     ("iters: {}\n".format(value) if where == "base" else ""))
        config = write(tmp_path / "config.yml", "_base_: base.yml\n" +
                       ("model: {}\n".format(value) if where == "config" else ""))
        opts = ["iters={}".format(value)] if where == "opts" else None
        with pytest.raises(ConfigError) as err:
            load_config(config, opts=opts)
        message = str(err.value)
        assert "python/" in message and "Remove the tag" in message, (tag, message)
        assert {"config": "config.yml", "base": "base.yml", "opts": "--opts"}[where] in message
        assert not marker.exists()


def _reachable(bases, root):
    seen, stack = [], [root]
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.append(node)
            stack.extend(bases[node])
    return set(seen)


def _has_cycle(bases, root):
    state = {}

    def visit(node):
        if state.get(node) == 1:
            return True
        if state.get(node) == 2:
            return False
        state[node] = 1
        if any(visit(b) for b in bases[node]):
            return True
        state[node] = 2
        return False

    return visit(root)


def test_generated_base_graphs(tmp_path):
    """Random _base_ graphs over 1..5 files: a cycle reachable from the config is refused naming a
    real cycle (each file in it names the next); without one, every reachable file is merged and
    the config's own keys win."""
    rng = np.random.default_rng(0)
    outcomes = {"cycle": 0, "merged": 0}
    for case in range(60):
        n = int(rng.integers(1, 6))
        bases = {i: [int(j) for j in rng.choice(n, size=int(rng.integers(0, min(n, 3) + 1)),
                                                 replace=False)] for i in range(n)}
        folder = tmp_path / str(case)
        folder.mkdir()
        for i, names in bases.items():
            write(folder / "f{}.yml".format(i), yaml.safe_dump(
                {"_base_": ["f{}.yml".format(j) for j in names], "f{}".format(i): i, "who": i}))
        root = str(folder / "f0.yml")
        if _has_cycle(bases, 0):
            with pytest.raises(ConfigError, match="form a cycle") as err:
                _read_yaml(root)
            cycle = str(err.value).split("form a cycle: ")[1].split(". A config")[0].split(" -> ")
            ids = [int(os.path.basename(p)[1:-4]) for p in cycle]
            assert ids[0] == ids[-1] and len(set(ids)) == len(ids) - 1, (bases, ids)
            assert all(b in bases[a] for a, b in zip(ids, ids[1:])), (bases, ids)
            outcomes["cycle"] += 1
        else:
            dic = _read_yaml(root)
            assert dic["who"] == 0
            assert {k for k in dic if k.startswith("f")} == \
                {"f{}".format(i) for i in _reachable(bases, 0)}
            outcomes["merged"] += 1
    assert outcomes["cycle"] > 10 and outcomes["merged"] > 10, outcomes


def test_unreadable_structures_and_values(tmp_path):
    cases = {"nested": ("model: " + "[" * 5000 + "]" * 5000 + "\n", "nested more than"),
             "huge int": ("iters: " + "1" * 5000 + "\n", "value YAML cannot read"),
             "bad date": ("iters: 2001-13-45\n", "value YAML cannot read"),
             "base type": ("_base_: 5\n", "_base_ in"),
             "base list": ("_base_: [[a.yml]]\n", "_base_ in"),
             "not a mapping": ("- 1\n- 2\n", "must be a YAML mapping"),
             "binary": ("\xff\xfe\x00", "not UTF-8")}
    for name, (text, fragment) in cases.items():
        path = str(tmp_path / "x.yml")
        with open(path, "wb") as f:
            f.write(text.encode("latin1"))
        with pytest.raises(ConfigError, match=fragment):
            load_config(path)


def test_paddleseg_config_reader_is_the_safe_one(tmp_path):
    """PaddleSeg's own ``Config`` (``yaml.FullLoader`` in paddleseg 2.8) reads through ours once
    paddle_rtseg is imported: tags and cycles are refused there too."""
    from paddleseg.cvlibs import Config
    with pytest.raises(ConfigError, match="Remove the tag"):
        Config(write(tmp_path / "tag.yml", "batch_size: !!python/name:os.system\n"))
    with pytest.raises(ConfigError, match="form a cycle"):
        Config(write(tmp_path / "self.yml", "_base_: self.yml\n"))


def test_cli_alias_bomb_tag_and_cycle(tmp_path):
    """train with the 477-byte alias bomb of the report (it hung), a config naming itself, and a
    tag in --opts: exit 2, one line each, in seconds."""
    bomb = write(tmp_path / "bomb.yml", "_base_: {}\n".format(SLIM_SYNTHETIC) + alias_bomb(9, 9)
                 .replace("l0:", "x0:"))
    cases = [(["--config", bomb], "expands to more than"),
             (["--config", write(tmp_path / "self.yml", "_base_: self.yml\n")], "form a cycle"),
             (["--config", SLIM_SYNTHETIC, "--opts", "iters=!!python/name:os.system"],
              "Remove the tag")]
    for args, fragment in cases[:1]:
        start = time.perf_counter()
        out = run_module("paddle_rtseg.train", *args, "--save_dir", tmp_path / "out", cwd=tmp_path,
                         timeout=120)
        assert time.perf_counter() - start < 60
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
        errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and fragment in errors[0], out.stderr[-2000:]
    for args, fragment in cases[1:]:  # the same reader in-process (the CLI path is shown above)
        with pytest.raises(ConfigError, match=fragment):
            load_config(args[1], opts=args[3:] or None)


def merge_bomb(width, depth):
    """``depth`` levels, each a mapping merging (``<<``) the level below ``width`` times: PyYAML
    copies width**depth x 10 key/value pairs while building it, into a dict of 11 keys."""
    lines = ["m0: &m0 {" + ", ".join("k{0}: {0}".format(i) for i in range(10)) + "}"]
    for level in range(1, depth + 1):
        lines.append("m{0}: &m{0} {{<<: [{1}], z: 1}}".format(
            level, ", ".join(["*m{}".format(level - 1)] * width)))
    return "\n".join(lines) + "\n"


def test_generated_merge_key_bombs_are_bounded(tmp_path):
    """Merge keys of merge keys (a 700-byte config hung for minutes: PyYAML expands the merges
    before any count could see them): widths 2..10, depths 1..8; those within
    PADDLE_RTSEG_MAX_CONFIG_VALUES load with the merged keys, the others are refused at once with
    the limit's name."""
    outcomes = {"loaded": 0, "refused": 0}
    for width, depth in itertools.product((2, 5, 10), range(1, 9)):
        path = write(tmp_path / "merge.yml", merge_bomb(width, depth))
        start = time.perf_counter()
        pairs = sum(10 * width ** level for level in range(1, depth + 1))
        if pairs < 20000:
            dic = _read_yaml(path)
            assert dic["m{}".format(depth)] == dict({"k{}".format(i): i for i in range(10)}, z=1)
            outcomes["loaded"] += 1
        elif pairs > 200000:
            with pytest.raises(ConfigError, match="merge keys") as err:
                _read_yaml(path)
            assert "PADDLE_RTSEG_MAX_CONFIG_VALUES" in str(err.value)
            outcomes["refused"] += 1
        assert time.perf_counter() - start < 2, (width, depth)
    assert outcomes["loaded"] > 5 and outcomes["refused"] > 5, outcomes


@pytest.mark.parametrize("opts, message", [
    (["itres=100000"], "unknown top-level key 'itres'. Did you mean 'iters'?"),
    (["=5"], "is not a key"),
    (["model..type=x"], "is not a key"),
    (["model.type=[1, 2]"], "`type:` at model must be a name"),
    (["lr_scheduler.type=CyclicLR"], "lr_scheduler in .* cannot be built: .*unexpected keyword"),
    (["lr_scheduler.power=.nan"], "cannot be built: .*'power' must be greater than 0"),
    (["lr_scheduler.warmup_iters=0", "lr_scheduler.warmup_start_lr=0.0"],
     "cannot be built: 'warmup_steps' must be a positive integer"),
    (["lr_scheduler.type=LambdaDecay"], "cannot be built")])
def test_keys_types_and_schedules_that_cannot_work_are_one_paragraph(opts, message):
    """What the config reader accepted before and training then ignored (a misspelt top-level key)
    or died on (a list as `type:`, a scheduler its keys cannot build): one ConfigError."""
    with pytest.raises(ConfigError, match=message) as err:
        load_config(SLIM_SYNTHETIC, opts=opts)
    assert "\n" not in str(err.value) and len(str(err.value)) < 1000
