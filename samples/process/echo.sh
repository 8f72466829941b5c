#!/bin/sh
# Echoes its input.
exec cat
