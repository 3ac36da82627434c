#!/usr/bin/env bash
# Print the path of a Python 3.10 interpreter, or explain how to get one and fail.
# (Paddle Lite publishes wheels only up to cp310, so the project venv must be Python 3.10.)
set -u
is310() { "$@" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 10) else 1)' >/dev/null 2>&1; }
if [ -n "${PYTHON:-}" ]; then
  if is310 "$PYTHON"; then command -v "$PYTHON"; exit 0; fi
  echo "error: PYTHON=$PYTHON is not a Python 3.10 interpreter." >&2; exit 1
fi
for candidate in "env PYENV_VERSION=3.10.13 python3.10" "python3.10" "python3"; do
  if is310 $candidate; then
    # resolve pyenv shims to the real interpreter so the venv does not depend on PYENV_VERSION
    $candidate -c 'import sys; print(sys.executable)'; exit 0
  fi
done
if command -v pyenv >/dev/null 2>&1; then
  for v in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.10(\.|$)'); do
    p="$(pyenv root)/versions/$v/bin/python3.10"
    if is310 "$p"; then echo "$p"; exit 0; fi
  done
fi
cat >&2 <<'MSG'
error: no Python 3.10 interpreter found. paddle_rtseg's venv needs Python 3.10 (the Paddle Lite
wheel exists only up to cp310). Install one, e.g. `pyenv install 3.10.13` or
`apt-get install python3.10 python3.10-venv`, or point to it: `make test PYTHON=/path/to/python3.10`.
MSG
exit 1
