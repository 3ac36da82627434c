"""CPU threads of Paddle's dygraph (training, ``val``, ``predict``).

``import paddle`` sets ``OMP_NUM_THREADS=1`` where it is unset and ``FLAGS_paddle_num_threads`` is 1:
dygraph convolutions (oneDNN) and matmuls (MKL) then run on one core whatever the machine has, while
PyTorch uses every physical core by default. :func:`apply` sets Paddle's math-library threads
(``paddle.base.core.set_num_threads``: MKL and OpenMP) after import. The result does not change:
tests/test_speedups.py checks logits and gradients at 1 and 2 threads against each other.
"""
import os

#: ``--cpu_threads`` default: the CPUs this process may run on, shared among the processes that
#: ``paddle.distributed.launch`` (or pytest-xdist) starts on this machine
DEFAULT = "auto"


def available_cpus():
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    try:  # processes started side by side: paddle.distributed.launch's, pytest-xdist's workers
        local = int(os.environ.get("PADDLE_LOCAL_SIZE") or os.environ.get("PADDLE_TRAINERS_NUM")
                    or os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    except ValueError:
        local = 1
    return max(1, cpus // max(1, local))


def resolve(value):
    """``'auto'`` -> the CPUs available; an integer >= 1 as it is; else ValueError."""
    if value in (None, DEFAULT):
        return available_cpus()
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise ValueError("--cpu_threads must be 'auto' or an integer >= 1 (1 is Paddle's own "
                         "default), got {!r}".format(value))
    return n


def apply(value=DEFAULT):
    """Set Paddle's CPU math threads to ``resolve(value)``; returns the number."""
    from paddle.base import core

    n = resolve(value)
    core.set_num_threads(n)
    return n


def add_argument(parser):
    parser.add_argument("--cpu_threads", default=DEFAULT,
                        help="CPU threads of dygraph's math libraries: 'auto' (default: one per "
                             "available CPU) or a number (1 = Paddle's own default)")
