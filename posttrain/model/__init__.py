"""Model loading (embedded default, tiny test model, paths, hub ids) and FP8 training (`fp8/`)."""
