#!/bin/sh
# Upper-cases its input.
exec tr '[:lower:]' '[:upper:]'
