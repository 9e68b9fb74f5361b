"""localcluster: a Kubernetes API server and runtime on loopback for development and tests."""
