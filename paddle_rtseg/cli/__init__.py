"""The command-line front-ends, with their shared error handling (:mod:`.errors`: ``run_cli`` turns
a user error into one paragraph and exit status 2) and process settings (:mod:`.malloc_tuning`).

Each command is one module; ``python -m paddle_rtseg.<command>`` runs it because
:func:`install_command_names` makes ``paddle_rtseg.<command>`` another name of the same module
(:data:`COMMANDS`). Internal code imports the real names (``paddle_rtseg.cli.train``).
"""
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys

#: ``python -m paddle_rtseg.<key>`` runs the module ``paddle_rtseg.<value>``
COMMANDS = {
    "train": "cli.train",
    "val": "cli.val",
    "predict": "cli.predict",
    "export": "cli.export",
    "quantize": "cli.quantize",
    "deploy_all": "cli.deploy_all",
    "demo": "cli.demo",
    "fit_budget": "cli.fit_budget",
    "bench": "benchmarks.bench",
    "bench_deploy": "benchmarks.bench_deploy",
    "bench_segformer_pp": "benchmarks.bench_segformer_pp",
    "bench_train": "benchmarks.bench_train",
}


class _CommandName(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``paddle_rtseg.<command>``: imported, it is the module it names (one module object,
    so classes and state are shared); run with ``-m``, ``runpy`` gets that module's code."""

    def __init__(self, package):
        self.package = package

    def _target(self, fullname):
        prefix, _, name = fullname.rpartition(".")
        if prefix != self.package or name not in COMMANDS:
            return None
        return "{}.{}".format(self.package, COMMANDS[name])

    def find_spec(self, fullname, path=None, target=None):
        real = self._target(fullname)
        if real is None:
            return None
        origin = importlib.util.find_spec(real).origin
        return importlib.machinery.ModuleSpec(fullname, self, origin=origin)

    def create_module(self, spec):
        return importlib.import_module(self._target(spec.name))

    def exec_module(self, module):
        pass  # the real module ran when create_module imported it

    def get_code(self, fullname):  # what runpy executes as __main__
        real = self._target(fullname)
        return importlib.util.find_spec(real).loader.get_code(real)


def install_command_names(package="paddle_rtseg"):
    """Let ``paddle_rtseg.<command>`` name the modules of :data:`COMMANDS` (idempotent)."""
    if not any(isinstance(f, _CommandName) for f in sys.meta_path):
        sys.meta_path.append(_CommandName(package))
