"""Deployment tests: the images, compose files, Kubernetes manifests, the healthcheck, the containers
and their stand-in base images."""
