#!/bin/sh
# A stand-in for a coding agent: it plans, works through a few steps, writes its result and exits 0.
# Task 3.2 fails on its first attempt (a flaky test), then succeeds on the retry. Task 6 writes the
# DEPLOY.md its DONE gate (_Gate: sh -c "test -f DEPLOY.md"_) looks for.
# In a git worktree (necro run --workspace), it commits its work on the task's branch, as a coding
# agent would; task 2.2 leaves its work uncommitted, and the dispatcher commits it.
set -eu
id=$1
title=$2
echo "planning: $title"
if [ -n "${NECRO_BRANCH:-}" ]; then
    found=$(ls docs/RESULT-*.md 2>/dev/null | wc -l)
    echo "on branch $NECRO_BRANCH, with the results of $found earlier task(s)"
fi
sleep 0.2
for step in 1 2 3; do
    echo "working on $title: step $step of 3"
    sleep 0.2
done
mkdir -p docs
printf '# %s\n\nDone by runner %s.\n' "$title" "$RUNNER_ID" > "docs/RESULT-$id.md"
if [ "$id" = "6" ]; then printf '# Deploying\n\nBuild the image, deploy to staging, run the smoke test.\n' > DEPLOY.md; fi
if [ "$id" = "3.2" ] && [ "${NECRO_ATTEMPT:-1}" = "1" ]; then
    echo "tests failed: flaky WebSocket reconnect test" >&2
    exit 1
fi
echo "wrote docs/RESULT-$id.md"
if [ -n "${NECRO_BRANCH:-}" ] && [ "$id" != "2.2" ]; then
    git add -A
    git -c user.name="Example agent" -c user.email=agent@example.com commit -q -m "$id: $title"
    echo "committed on $NECRO_BRANCH"
fi
