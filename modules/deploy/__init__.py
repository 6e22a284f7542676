"""Deploying the flows elsewhere than this machine (Argo Workflows on Kubernetes)."""
