"""MobileNetV2 for 1x28x28 Fashion-MNIST (per-tensor PTQ subject; checkpoint outside git)."""
