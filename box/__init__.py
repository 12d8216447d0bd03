"""Host side of docker-registry-cache: base image, Packer template, boxes, catalog, publishing."""
