#!/bin/sh
# Makes a small Docker image without a registry: busybox, git with the libraries it links, and any
# extra files given as HOST-FILE=PATH-IN-IMAGE (a program with the libraries it links), all from
# this machine, `docker import`ed as NAME.
# Needs Debian's busybox-static and git, and a Docker engine (DOCKER_HOST, or the default socket).
#   Scripts/busybox-image.sh necro-example-agent Examples/chat-app/agent.sh=/usr/local/bin/agent
set -eu
name=$1
shift
[ -x /bin/busybox ] || { echo "busybox-image: /bin/busybox is missing (apt-get install busybox-static)" >&2; exit 1; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
chmod 755 "$root"
mkdir -p "$root/bin" "$root/tmp" "$root/etc" "$root/usr/bin" "$root/usr/local/bin"
chmod 1777 "$root/tmp"
cp /bin/busybox "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do
    [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
cp /usr/bin/git "$root/usr/bin/git"
for lib in $(ldd /usr/bin/git | grep -o '/[^ ]*'); do cp -L --parents "$lib" "$root/"; done
echo 'root:x:0:0:root:/tmp:/bin/sh' > "$root/etc/passwd"
for extra in "$@"; do
    mkdir -p "$root/$(dirname "${extra#*=}")"
    cp "${extra%%=*}" "$root/${extra#*=}"
    chmod 755 "$root/${extra#*=}"
    # A program brings the libraries it links.
    for lib in $(ldd "${extra%%=*}" 2>/dev/null | grep -o '/[^ ]*'); do cp -L --parents "$lib" "$root/"; done
done
tar -C "$root" -c . | docker import - "$name" >/dev/null
echo "busybox-image: made $name"
