#!/bin/sh
# Reverses each line of its input.
exec rev
