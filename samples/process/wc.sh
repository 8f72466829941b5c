#!/bin/sh
# Counts the bytes of its input.
exec wc -c
