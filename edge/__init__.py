"""The edge gateway daemon: poll, decode, alarm, buffer and forward."""
