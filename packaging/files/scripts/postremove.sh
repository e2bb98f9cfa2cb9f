#!/bin/sh
# After the files are gone (dpkg: postrm; rpm: %postun). /var/lib/tomoe
# stays, even on purge: it holds the node's key, which is its address and
# identity; remove it by hand when the node is gone for good. The user and
# group tomoe stay too (files may still carry their ids).
set -e

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
exit 0
