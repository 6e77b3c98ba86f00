#!/usr/bin/env bash
# `cmake --install` of the build into a temporary prefix, then two programs built against it the
# ways an app would: with `pkg-config --cflags --libs tandem`, and with find_package(tandem).
# Usage: install_test.sh BUILD_DIR SOURCE_DIR MODEL.gguf C_COMPILER
set -euo pipefail
build=$1 src=$2 model=$3 cc=$4
prefix=$(mktemp -d "${TMPDIR:-/tmp}/tandem-install-XXXXXX")
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" >/dev/null
for f in include/tandem.h lib/pkgconfig/tandem.pc lib/cmake/tandem/tandemConfig.cmake \
         lib/cmake/tandem/tandemConfigVersion.cmake; do
  [[ -f $prefix/$f ]] || { echo "missing after install: $f"; exit 1; }
done
ls "$prefix"/lib/libtandem.so.* >/dev/null

# pkg-config
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
[[ $(pkg-config --modversion tandem) == "$(sed -n 's/^#define TANDEM_VERSION_STRING "\(.*\)"/\1/p' "$src/runtime/tandem.h")" ]]
# shellcheck disable=SC2046
"$cc" -std=c11 -Wall -Wextra -Werror "$src/tests/c_api/consumer/consumer.c" \
  $(pkg-config --cflags --libs tandem) -o "$prefix/consumer-pc"
LD_LIBRARY_PATH=$prefix/lib "$prefix/consumer-pc" "$model"

# find_package(tandem)
cmake -S "$src/tests/c_api/consumer" -B "$prefix/consumer-build" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_C_COMPILER="$cc" >/dev/null
cmake --build "$prefix/consumer-build" >/dev/null
"$prefix/consumer-build/consumer" "$model"
echo "install test: pkg-config and find_package(tandem) both build and run"
