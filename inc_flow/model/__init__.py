"""The tuned model: output directory (save/load), model factory, pyfunc flavor, registry."""
