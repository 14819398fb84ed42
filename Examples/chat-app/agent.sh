#!/bin/sh
# A stand-in for a coding agent: it plans, works through a few steps, writes its result and exits 0.
# Task 3.2 fails on its first attempt (a flaky test), then succeeds on the retry.
set -eu
id=$1
title=$2
echo "planning: $title"
sleep 0.2
for step in 1 2 3; do
    echo "working on $title: step $step of 3"
    sleep 0.2
done
if [ "$id" = "3.2" ] && [ "${NECRO_ATTEMPT:-1}" = "1" ]; then
    echo "tests failed: flaky WebSocket reconnect test" >&2
    exit 1
fi
printf '# %s\n\nDone by runner %s.\n' "$title" "$RUNNER_ID" > "RESULT-$id.md"
echo "wrote RESULT-$id.md"
