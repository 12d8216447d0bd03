"""Invoke task modules, one per concern; tasks.py at the top assembles them."""
