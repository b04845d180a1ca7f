#!/usr/bin/env bash
# Builds the libzmq load programs, reference forwarders and echo service into bench/bin/.
#   bench/build.sh          (needs a C compiler and libzmq3-dev: ./dev setup)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$here/bin"
CC="${CC:-cc}"
if pkg-config --exists libzmq 2>/dev/null; then
    read -r -a zmq_flags <<<"$(pkg-config --cflags --libs libzmq)"
else
    zmq_flags=(-lzmq)
fi
for prog in zsend zrecv zfwd zlat zreq zrep; do
    src="$here/c/$prog.c"
    out="$here/bin/$prog"
    if [ ! -x "$out" ] || [ "$src" -nt "$out" ] || [ "$here/c/common.h" -nt "$out" ]; then
        "$CC" -O2 -g -std=c11 -Wall -Wextra -Werror -o "$out" "$src" "${zmq_flags[@]}"
    fi
done
