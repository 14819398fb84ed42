#!/bin/sh
# Creates the example's sample repository (a small chat-app project with one commit on main), for
# `necro run Examples/chat-app/tasks.md --workspace DIR`: each task then works in a git worktree of
# it, on a branch of its own. Leaves an existing repository as it is.
# Usage: Examples/chat-app/sample-repo.sh [DIR]   (default .necro/chat-app-repo)
set -eu
dir=${1:-.necro/chat-app-repo}
if [ -d "$dir/.git" ]; then
    echo "sample repository: $dir (exists)"
    exit 0
fi
# necro's folder, if this makes it, is yours alone, as necro makes it (0700).
if [ "$dir" = .necro/chat-app-repo ] && [ ! -d .necro ]; then mkdir -m 700 .necro; fi
mkdir -p "$dir/Sources/ChatServer" "$dir/web" "$dir/docs"
cd "$dir"
git init -q -b main
cat > README.md <<'TEXT'
# Chat app

A team chat application: a Swift backend with JWT auth and WebSockets, and a web client.
TEXT
printf 'build/\n.build/\n' > .gitignore
printf 'print("chat server")\n' > Sources/ChatServer/main.swift
printf '<!doctype html>\n<title>Chat</title>\n' > web/index.html
printf '# Design notes\n' > docs/NOTES.md
git add -A
git -c user.name="Sample" -c user.email=sample@example.com commit -q -m "Project skeleton"
echo "sample repository: $dir"
