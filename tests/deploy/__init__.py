"""Tests of the deployment artifacts (images, Kubernetes, Prometheus, Grafana) with the tools that consume them."""
