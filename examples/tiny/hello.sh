#!/bin/sh
# Copied into the step VM with its mode kept: it must stay executable.
echo "$GREETING from $(uname -m)"
