"""The test lab: what the integration tests, the box tests and the benchmarks stand on.

Network namespaces (netns), a private libvirtd (libvirtd), the QEMU runner (qemuvm), the
Vagrant driver (vagrant), booting a built box (boot), the box as the tests see it (machines),
real registries (registry), a token-auth upstream (tokenauth), test images written as OCI
layouts (oci_layout) and pushed and pulled with skopeo (images), a shaped WAN link (netem), free
ports and the one "does /v2/ answer" probe (procs).

The lab may use the host libraries (`box.run`, `box.wait`, `box.files`, `box.sizes`, `box.qemu`,
`box.buildinfo`, `box.templating`);
build and publish code never import the lab, and the lab never imports `tests`.
"""
