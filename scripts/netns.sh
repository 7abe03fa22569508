#!/bin/sh
# Run a command in a private network namespace whose loopback also owns 10.244.0.0/16, the pod
# network of the dev control plane: the serving harness listens on each replica's pod IP there
# (EndpointSlices refuse loopback 127.0.0.0/8 addresses, so the pods need real-looking ones), and
# nothing the tests start can collide with, or be reached from, the host's network.
set -eu
exec unshare --user --map-root-user --net -- sh -c '
  ip link set lo up
  ip addr add 10.244.0.1/16 dev lo
  exec "$@"' netns "$@"
