#!/usr/bin/env bash
# Superseded: the tracker's GPU tests, the Jacobi smoke and the tracker benchmark are steps of the
# one device command (benchmarks/run_device.sh, <= 7 minutes). Kept so that old notes still work.
exec bash "$(dirname "$0")/run_device.sh" "$@"
