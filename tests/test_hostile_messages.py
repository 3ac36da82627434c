"""The shared error mechanism bounds every message: whatever a refusal quotes (one error line was
once 600 KB, the repr of a huge object), the CLIs print one line of at most MAX_MESSAGE_CHARS
characters keeping its start and its end (where the fix is), and the runners' DeployError too."""
import numpy as np
import pytest

from paddle_rtseg.cli import errors
from paddle_rtseg.weights.checkpoints import CheckpointMismatchError
from paddle_rtseg.config import ConfigError
from paddle_rtseg_runtime import DeployError
from paddle_rtseg_runtime.errors import MAX_MESSAGE_CHARS, bounded
from paddle_rtseg.weights.safe_pickle import UnsafeCheckpointError, short_repr


def _message(rng, length):
    words = rng.choice(["word", "x" * 50, "\n", "path/to/file.yml", "{'a': [1, 2]}"], size=length)
    text = "START " + " ".join(words) + " END"
    return text


@pytest.mark.parametrize("kind", [ConfigError, DeployError, UnsafeCheckpointError,
                                  CheckpointMismatchError])
def test_run_cli_prints_one_bounded_line(monkeypatch, capsys, kind):
    monkeypatch.setattr(errors.malloc_tuning, "apply", lambda: None)
    rng = np.random.default_rng(len(kind.__name__))
    for length in [0, 3, 100, 400, 1000, 20000, 200000]:
        text = _message(rng, length)

        def main():
            raise kind(text)

        with pytest.raises(SystemExit) as exit_:
            errors.run_cli(main)
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: START"), err[:200]
        line = err[len("error: "):-1]
        assert len(line) <= MAX_MESSAGE_CHARS and line.endswith(" END"), (length, len(line))
        flat = " ".join(text.split("\n"))
        if len(flat) <= MAX_MESSAGE_CHARS:
            assert line == flat
        else:
            assert "characters cut" in line and line[:100] == flat[:100]
            assert line[-100:] == flat[-100:]


def test_bounded_keeps_short_messages_and_counts_what_it_cuts():
    for n in range(0, 3 * MAX_MESSAGE_CHARS, 97):
        text = "".join(chr(65 + i % 26) for i in range(n))
        out = bounded(text)
        assert len(out) <= MAX_MESSAGE_CHARS
        if n <= MAX_MESSAGE_CHARS:
            assert out == text
        else:
            head, rest = out.split(" [... ", 1)
            cut, tail = rest.split(" characters cut ...] ", 1)
            assert len(head) + int(cut) + len(tail) == n and text.startswith(head) \
                and text.endswith(tail)
    assert len(str(DeployError("y" * 10 ** 6))) <= MAX_MESSAGE_CHARS


def test_quoted_values_are_short_even_when_huge_or_deep():
    deep = []
    for _ in range(100000):
        deep = [deep]
    for value in ["x" * 10 ** 6, list(range(10 ** 5)), {i: i for i in range(10 ** 4)}, deep,
                  ("storage",) * 1000, b"\0" * 10 ** 6]:
        assert len(short_repr(value)) <= 203


@pytest.mark.parametrize("kind", ["folder", "device"])
def test_a_path_that_is_not_a_file_is_named_as_such(tmp_path, kind):
    """A folder or /dev/null as a checkpoint, a config or a _base_: the message says what it is
    (it said "does not exist")."""
    from paddle_rtseg.config import load_config
    from paddle_rtseg.weights.checkpoints import read_checkpoint
    path = str(tmp_path) if kind == "folder" else "/dev/null"
    what = "is a folder, not a file" if kind == "folder" else "is not a regular file"
    with pytest.raises(FileNotFoundError, match=what):
        read_checkpoint(path)
    config = tmp_path / "c.yml"
    config.write_text("_base_: {}\n".format(path))
    for target in (path, str(config)):  # the config itself, and a config naming it as _base_
        with pytest.raises(ConfigError, match=what):
            load_config(target)
