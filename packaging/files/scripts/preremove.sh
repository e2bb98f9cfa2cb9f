#!/bin/sh
# Before the files go (dpkg: prerm remove|upgrade; rpm: %preun). On a
# removal (not an upgrade) the service is stopped and disabled.
set -e

case "$1" in
remove | 0) ;;
*) exit 0 ;;
esac

if command -v systemctl >/dev/null; then
	if [ -d /run/systemd/system ]; then
		systemctl stop tomoe.service || true
	fi
	systemctl disable tomoe.service >/dev/null 2>&1 || true
fi
exit 0
