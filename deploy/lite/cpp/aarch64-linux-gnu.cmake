# Cross-compile for arm64 Linux on a Debian/Ubuntu x86 host: `apt-get install g++-aarch64-linux-gnu`
# and the arm64 multiarch libraries (`dpkg --add-architecture arm64`;
# `apt-get install libjpeg62-turbo-dev:arm64 libpng-dev:arm64`, Ubuntu: libjpeg-turbo8-dev:arm64).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)
# find only arm64 libraries (multiarch paths), never the host's x86 ones
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu /)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
