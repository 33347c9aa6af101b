"""The seed LeNet on Fashion-MNIST: model definition, training script and fp32 checkpoint."""
