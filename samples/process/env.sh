#!/bin/sh
# Greets $NAME (set it with --env NAME=you).
echo "hello, ${NAME:-world}"
