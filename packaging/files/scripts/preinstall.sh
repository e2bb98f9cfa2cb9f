#!/bin/sh
# Before the files are unpacked (dpkg: preinst install|upgrade; rpm: %pre),
# on every install and upgrade: the system user and group tomoe, so that
# the package's files get their owner. Idempotent: existing ones are kept.
# The group tomoe is also the admin socket's group.
set -e

if ! getent group tomoe >/dev/null; then
	groupadd --system tomoe
fi
if ! getent passwd tomoe >/dev/null; then
	nologin=/usr/sbin/nologin
	[ -x "$nologin" ] || nologin=/sbin/nologin
	useradd --system --gid tomoe --no-create-home --home-dir /var/lib/tomoe \
		--shell "$nologin" --comment "tomoe overlay network" tomoe
fi
exit 0
