"""ResNet18 for 1x28x28 Fashion-MNIST (benchmark subject; its checkpoint stays outside git)."""
