"""The only home of torch.ao: plan -> QConfigMapping, FX and eager graphs, int8 state,
op statistics, and the engine that builds, calibrates and converts plans."""
