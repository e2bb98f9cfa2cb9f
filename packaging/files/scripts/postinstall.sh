#!/bin/sh
# After the files are in place (dpkg: postinst configure; rpm: %post).
# The service is not enabled or started here: that is the administrator's
# `systemctl enable --now tomoe`, after reading /etc/tomoe/tomoe.toml. On
# an upgrade a running service is restarted onto the new binary.
set -e

case "$1" in
configure | [0-9]*) ;;
*) exit 0 ;; # dpkg's abort-upgrade and the like: nothing to do
esac

# The state directory holds the node's key: 0700, the service's own.
install -d /var/lib/tomoe
chown tomoe:tomoe /var/lib/tomoe
chmod 0700 /var/lib/tomoe

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
	upgrade=
	case "$1" in
	configure) [ -n "$2" ] && upgrade=1 ;;
	[2-9] | [1-9][0-9]*) upgrade=1 ;; # rpm: packages left after this one
	esac
	if [ -n "$upgrade" ]; then
		systemctl try-restart tomoe.service || true
	fi
fi
exit 0
