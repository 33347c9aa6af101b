"""An LSTM sequence classifier on synthetic noisy waveforms: data, model, training script and
fp32 checkpoint (post-training dynamic quantization: ``conf/lstm_dynamic.yaml``)."""
