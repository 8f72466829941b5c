#!/bin/sh
# Reads its input, complains on stderr and exits 3: a FAILED execution.
cat >/dev/null
echo "something went wrong" >&2
exit 3
