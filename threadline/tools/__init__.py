"""Tools on top of the features: the command line, the local stack, the set-up step, the
benchmarks, the demo and the Kubernetes manifests. They may import every layer below them;
nothing below imports them (the import contracts in pyproject.toml, checked by `make test`)."""
