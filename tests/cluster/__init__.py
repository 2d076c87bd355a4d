"""Test infrastructure: a real Kubernetes control plane (see controlplane.py)."""
