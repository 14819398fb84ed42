#!/bin/sh
# A stand-in for a coding agent's executable (linked as claude, codex or aider, first on PATH):
# it records how it was started and replays a transcript written in the tool's documented output
# shape, as the real tool would print it. No network, no model.
#
#   STANDIN_RECORD        folder for <name>.<n>.args (one argument per line), <name>.<n>.stdin
#                         and <name>.<n>.env; n counts this tool's runs from 1
#   STANDIN_TRANSCRIPT_n  the transcript of run n (else STANDIN_TRANSCRIPT); @NOW+S@ in it
#                         becomes the time S seconds from now, in seconds since 1970
#   STANDIN_THEN_n        shell commands run after the transcript (else STANDIN_THEN), with
#                         STANDIN_PARENT (who started the stand-in), STANDIN_PID and STANDIN_RUN
#   STANDIN_EXIT_n        its exit status (else STANDIN_EXIT, else 0)
name=$(basename "$0")
record=${STANDIN_RECORD:?STANDIN_RECORD names the folder the stand-in records in}
n=1
while [ -e "$record/$name.$n.args" ]; do n=$((n + 1)); done
for argument in "$@"; do printf '%s\n' "$argument"; done > "$record/$name.$n.args.tmp"
cat > "$record/$name.$n.stdin"
env > "$record/$name.$n.env"
mv "$record/$name.$n.args.tmp" "$record/$name.$n.args"
pick() { eval "value=\${$1_$n:-\${$1:-}}"; printf '%s' "$value"; }
transcript=$(pick STANDIN_TRANSCRIPT)
if [ -n "$transcript" ]; then
    now=$(date +%s)
    awk -v now="$now" '{
        while (match($0, /@NOW\+[0-9]+@/)) {
            seconds = substr($0, RSTART + 5, RLENGTH - 6)
            $0 = substr($0, 1, RSTART - 1) (now + seconds) substr($0, RSTART + RLENGTH)
        }
        print
    }' "$transcript"
fi
then=$(pick STANDIN_THEN)
# What runs after sees who started the stand-in (the runner) and the stand-in itself.
export STANDIN_PARENT="$PPID" STANDIN_PID="$$" STANDIN_RUN="$n"
if [ -n "$then" ]; then sh -c "$then" || exit $?; fi
status=$(pick STANDIN_EXIT)
exit "${status:-0}"
