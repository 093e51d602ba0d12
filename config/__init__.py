"""Shipped configuration data: profiles, examples, broker config, routing tables."""
