"""The tuned model: output directory (save/load), model factory, pyfunc flavor (signature and
sidecar, pip requirements), registry."""
