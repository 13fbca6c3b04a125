"""vicreg: a small VICReg trainer in plain PyTorch.

Modules and packages, in the order data flows through them:
  errors     - the exceptions a user sees (one line each) and the one first-line helper
  config/    - the typed config tree (YAML in, unknown keys rejected; allowed names declared once)
  io         - file lock, atomic write, content digests, JSON
  data/      - the images: the decode cache, each source, folds and hold-out, the pretraining selection
  seen       - what pretraining saw, in words (the record beside every verdict)
  augment    - VICReg's two views, batch-wise on the device (kornia)
  imagenet   - where the encoder starts: which local ImageNet file, if any
  model      - ResNet encoder + expander MLP
  loss       - the VICReg loss and its three terms
  optim      - LARS / SGD / Adam(W), warm-up + cosine schedule
  checkpoint - every weights file, written and read as weights only
  train      - pretrain(cfg, images, callbacks) -> PretrainResult; train_step; resuming
  evaluate/  - evaluate(encoder, EvalData, cfg) -> EvalReport: protocols, probe, scores, the floors, predict
  verdict    - did pretraining help: the primary verdict, the hold-out and CV lines, the quoted score
  coverage   - simulated hold-outs with a known difference: how often the verdict's interval covers
  plots      - loss terms, confusion matrices, curves

Nothing here imports optuna or mlflow; the sweep harness (sweeps/) hangs on callbacks.
"""
