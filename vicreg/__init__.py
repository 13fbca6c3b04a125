"""vicreg: a small VICReg trainer in plain PyTorch.

Modules, in the order data flows through them:
  config    - the typed config tree (YAML in, unknown keys rejected)
  data      - DRAC22 / CIFAR-10 / synthetic images as cached uint8 tensors, folds
  synthetic - the synthetic DRAC22-format generator
  augment   - VICReg's two views, batch-wise on the device (kornia)
  model     - ResNet encoder + expander MLP
  loss      - the VICReg loss and its three terms
  optim     - LARS / SGD / Adam(W), warm-up + cosine schedule
  train     - pretrain(cfg, images, callbacks) -> PretrainResult
  evaluate  - k-fold downstream protocols, probe, metrics, plots, submission

Nothing here imports optuna or mlflow; the sweep harness (sweeps/) hangs on callbacks.
"""
