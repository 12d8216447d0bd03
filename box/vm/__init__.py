"""Boots the built box for tests and benchmarks: network namespace, private libvirtd, Vagrant, QEMU."""
