"""The only home of torch.ao: ``ao`` (torch.ao names, warning filters, kernel library),
``mapping`` (plan -> QConfigMapping), ``graph`` (FX), ``eager``, ``state`` (int8 state dict),
``stats``, ``engine`` (builds and calibrates plans) and ``evaluate`` (accuracy, latency)."""
