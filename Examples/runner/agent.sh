#!/bin/sh
# A stand-in for a coding agent under `necro runner`: it says which step it works on (`necro step`),
# and writes each step's file. On its first attempt at task 1 it forgets the test's expected
# output; the gate fails, and the next attempt reads why in TASK_CONTEXT.previous_failure and fixes
# it. A resumed attempt is told which steps a checkpoint recorded as done (NECRO_DONE_STEPS); this
# agent does them again anyway, and `necro step` on one of them only says it was done already.
set -eu
echo "task $NECRO_TASK_ID, attempt $NECRO_ATTEMPT; steps already done: ${NECRO_DONE_STEPS:-none}"
case "$NECRO_TASK_ID" in
1)
    necro step start 1
    printf 'echo "hello, ${1:-world}"\n' > greet.sh
    necro step done 1
    necro step start 2
    case "$TASK_CONTEXT" in
    *'"previous_failure":{'*) echo "the last attempt failed its gate; fixing the test"; expected="hello, necro" ;;
    *) expected="hello necro" ;;
    esac
    printf '[ "$(sh greet.sh necro)" = "%s" ] || { echo "FAIL: greet.sh said: $(sh greet.sh necro)"; exit 1; }\necho "ok"\n' "$expected" > test.sh
    necro step done 2
    ;;
2)
    necro step start 1
    printf '# Greeter\n\nRun `sh greet.sh NAME`.\n' > README.md
    necro step done 1
    ;;
esac
