#!/bin/sh
# Writes "tick N" every 200 ms, TICKS times (default 5): try it in stream mode.
n=${TICKS:-5}
i=1
while [ "$i" -le "$n" ]; do
  echo "tick $i"
  if [ "$i" -lt "$n" ]; then sleep 0.2; fi
  i=$((i + 1))
done
