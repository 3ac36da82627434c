"""Named limits on what a small input file may make this process allocate, and the bounded YAML
reader every config and ``deploy.yaml`` goes through.

A checkpoint, config, image or model folder is untrusted input: a few hundred bytes can declare a
20000x20000 tensor, a zip can inflate a thousandfold, YAML aliases can expand exponentially. Each
reader checks what the file declares against one of :data:`DEFAULTS` *before* allocating it, and the
refusal names the limit and the environment variable that raises it (for a file you trust).
Imports nothing outside this package, the standard library and PyYAML (the runners load this
package stand-alone).
"""
import os

from .errors import DeployError

#: name -> (default, what it bounds)
DEFAULTS = {
    "PADDLE_RTSEG_MAX_IMAGE_PIXELS": (100_000_000, "pixels of an image (width x height), checked "
                                                   "in its header before decoding"),
    "PADDLE_RTSEG_MAX_CONFIG_BYTES": (1 << 20, "bytes of a YAML config or deploy.yaml"),
    "PADDLE_RTSEG_MAX_CONFIG_VALUES": (100_000, "values in a YAML file once its aliases are "
                                                "expanded"),
    "PADDLE_RTSEG_MAX_ZIP_RATIO": (100, "ratio of the bytes a zip .pth declares to the bytes it "
                                        "holds on disk"),
    "PADDLE_RTSEG_MAX_TENSOR_EXPANSION": (4, "ratio of the bytes a checkpoint's tensors claim to "
                                             "the storage bytes the file holds"),
}
#: How deeply YAML collections may nest (PyYAML composes recursively).
MAX_YAML_DEPTH = 64


class LimitError(DeployError):
    """An input declares more than a named limit allows; the message says how to raise it."""


class YamlError(DeployError):
    """A YAML file that cannot be read safely; the message names the file and the fix."""


def limit(name):
    """The value of limit ``name``: its environment variable if set, else its default."""
    default = DEFAULTS[name][0]
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise LimitError("The environment variable {} must be a positive integer (it bounds the {}); "
                         "got {!r}. Unset it to use the default, {}.".format(
                             name, DEFAULTS[name][1], text[:40], default))
    return value


def how_to_raise(name):
    """The sentence every refusal by limit ``name`` ends with."""
    return ("The limit is {} ({}, default {}); if you trust the file, raise it with the environment "
            "variable {}=<larger value>.".format(limit(name), DEFAULTS[name][1], DEFAULTS[name][0],
                                                 name))


def check(name, value, what):
    """Raise :class:`LimitError` ``"<what> ... <how to raise>"`` if ``value`` exceeds ``name``."""
    if value > limit(name):
        raise LimitError("{} {}".format(what, how_to_raise(name)))


def _yaml_loader():
    import yaml

    class MergeBomb(yaml.YAMLError):
        pass

    class Loader(yaml.SafeLoader):
        """PyYAML's safe loader (no tags that build Python objects) with a nesting bound, and a
        bound on the pairs merge keys (``<<: [*a, *a, ...]``) copy while the document is built:
        each level of merges of merges multiplies them, before :func:`count_values` could see
        the (small) result."""

        def flatten_mapping(self, node):
            super().flatten_mapping(node)
            self._merged = getattr(self, "_merged", 0) + len(node.value)
            most = limit("PADDLE_RTSEG_MAX_CONFIG_VALUES")
            if self._merged > most:
                raise MergeBomb(most)

        def compose_node(self, parent, index):
            self._depth = getattr(self, "_depth", 0) + 1
            try:
                if self._depth > MAX_YAML_DEPTH:
                    raise yaml.YAMLError("collections nested more than {} levels deep"
                                         .format(MAX_YAML_DEPTH))
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

    Loader.MergeBomb = MergeBomb
    return Loader


def count_values(obj, most):
    """Values in ``obj`` counting a shared (aliased) value each time it appears, stopping past
    ``most`` (a YAML cycle, ``&a [*a]``, never ends otherwise); iterative: no recursion."""
    count, stack = 0, [obj]
    while stack:
        node = stack.pop()
        count += 1
        if count > most:
            return count
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, (list, tuple, set)):
            stack.extend(node)
    return count


def load_yaml_text(text, where):
    """Parse YAML ``text`` (of ``where``, for messages) with the safe bounded loader."""
    import yaml
    loader = _yaml_loader()
    try:
        obj = yaml.load(text, Loader=loader)
    except loader.MergeBomb as e:
        raise YamlError("{}'s merge keys (<<) copy more than {} key/value pairs (merges of merges "
                        "grow exponentially). {}".format(
                            where, e.args[0], how_to_raise("PADDLE_RTSEG_MAX_CONFIG_VALUES"))) \
            from None
    except yaml.constructor.ConstructorError as e:
        raise YamlError("{}{}: {}. YAML tags that build Python objects (such as !!python/name:) are "
                        "not read; a config holds plain values (numbers, text, lists, mappings). "
                        "Remove the tag.".format(where, _mark(e), _problem(e))) from None
    except yaml.YAMLError as e:
        raise YamlError("YAML syntax error in {}{}: {}. Fix the YAML there (indentation, unclosed "
                        "brackets or quotes, a ':' after each key).".format(
                            where, _mark(e), _problem(e))) from None
    except (ValueError, TypeError, OverflowError, RecursionError) as e:  # e.g. int('1' * 5000)
        raise YamlError("{} holds a value YAML cannot read: {}. Fix that value.".format(
            where, " ".join(str(e).split())[:200] or type(e).__name__)) from None
    most = limit("PADDLE_RTSEG_MAX_CONFIG_VALUES")
    if count_values(obj, most) > most:
        raise YamlError("{} expands to more than {} values (YAML aliases repeat a value wherever "
                        "they appear; nested aliases grow exponentially, and an alias inside its "
                        "own anchor never ends). {}".format(
                            where, most, how_to_raise("PADDLE_RTSEG_MAX_CONFIG_VALUES")))
    return obj


def read_yaml(path, what="Config file"):
    """Parse the YAML file ``path`` safely: bounded size, nesting and alias expansion, no Python
    tags. Raises :class:`YamlError` naming the file (``what path``) and the fix."""
    size = os.path.getsize(path)
    if size > limit("PADDLE_RTSEG_MAX_CONFIG_BYTES"):
        raise YamlError("{} {} is {} bytes; a config is a few kilobytes. {}".format(
            what, path, size, how_to_raise("PADDLE_RTSEG_MAX_CONFIG_BYTES")))
    with open(path, "rb") as f:
        data = f.read(size + 1)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise YamlError("{} {} is not UTF-8 text; save it as a UTF-8 YAML file.".format(
            what, path)) from None
    return load_yaml_text(text, path)


def _mark(e):
    mark = getattr(e, "problem_mark", None)
    return ", line {}, column {}".format(mark.line + 1, mark.column + 1) if mark else ""


def _problem(e):
    return " ".join(str(getattr(e, "problem", None) or e).split())[:300]
