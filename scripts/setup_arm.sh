#!/usr/bin/env bash
# Install what the ARM tests (tests/test_arm.py) need to cross-build deploy/lite/cpp and run it on
# the Paddle Lite ARM kernels under qemu: qemu-user-static, g++-aarch64-linux-gnu, cmake and arm64
# libjpeg/libpng (Debian multiarch). Idempotent; does nothing when everything is there, and only
# says what is missing when not root or without apt (the ARM tests then skip and say so).
set -uo pipefail
host=(qemu-user-static g++-aarch64-linux-gnu cmake)
arm=(libjpeg62-turbo-dev:arm64 libpng-dev:arm64)
missing=()
for p in "${host[@]}" "${arm[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "setup_arm: missing ${missing[*]} (not root or no apt-get); the ARM tests will skip" >&2
  exit 0
fi
echo "setup_arm: installing ${missing[*]}"
dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
  echo "setup_arm: apt-get failed; the ARM tests will skip" >&2
fi
exit 0
