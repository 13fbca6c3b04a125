"""vicreg: a small VICReg trainer in plain PyTorch.

Modules, in the order data flows through them:
  config     - the typed config tree (YAML in, unknown keys rejected; allowed names declared once)
  io         - file lock, atomic write, content digests
  drac22     - the DRAC22 Task 3 folder layout: scan and check
  layouts    - your own set: a folder of class folders, or a CSV of names and labels: scan and check
  data       - every source as uint8 memory maps of the decode cache; folds, hold-out, the pretraining selection
  seen       - what pretraining saw, in words (the record beside every verdict)
  batches    - Rows (a selection as an index, not a copy); on the device or streamed, a batch ahead
  synthetic  - the synthetic DRAC22-format generator
  augment    - VICReg's two views, batch-wise on the device (kornia)
  weights    - where the encoder starts: which local ImageNet file, if any
  model      - ResNet encoder + expander MLP
  loss       - the VICReg loss and its three terms
  optim      - LARS / SGD / Adam(W), warm-up + cosine schedule
  checkpoint - every weights file, written and read as weights only
  train      - pretrain(cfg, images, callbacks) -> PretrainResult; resuming
  evaluate   - evaluate(encoder, EvalData, cfg) -> EvalReport: k-fold protocols, probe, scores
  baselines  - random-init, raw pixels, ImageNet: the floors, cached
  verdict    - did pretraining help: the primary verdict, the hold-out and CV lines, the quoted score
  coverage   - simulated hold-outs with a known difference: how often the verdict's interval covers
  predict    - the submission file from any encoder
  plots      - loss terms, confusion matrices, curves

Nothing here imports optuna or mlflow; the sweep harness (sweeps/) hangs on callbacks.
"""
