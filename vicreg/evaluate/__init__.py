"""Downstream evaluation on the study's stored folds: probes, fine-tuning, scores, the floors.

  metrics   - scores(): kappa, macro-F1, accuracy, AUC, recall, confusion (scikit-learn)
  report    - EvalReport (per fold, pooled, hold-out) and the one scores file, folds_scores.csv
  features  - frozen-encoder features, a chunk at a time, in memory or memory-mapped
  probe     - the ridge probe a sweep prunes on
  heads     - the heads and fine-tuning per fold, and their one training loop
  protocol  - evaluate(encoder, EvalData, cfg) -> EvalReport over the stored folds
  baselines - the floors: random-init, raw pixels, ImageNet, each scored the same way, cached
  predict   - the submission file from any encoder

Protocols (`eval.protocol`):
  linear    frozen encoder, features extracted once, a trained linear layer per fold
  head      frozen encoder, features extracted once, an MLP head with dropout per fold
  conv+head the last ResNet stage trained with the head (the original report's best transfer setting)
  full      the whole network, discriminative learning rates per stage and gradual
            unfreezing from the top (Romero et al., Med. Phys. 2020; Howard & Ruder 2018)

Scores from scikit-learn: quadratic weighted kappa (the primary score of graded labels,
DRAC22's metric), macro-F1 (the primary score of unordered classes: data.ordinal false),
accuracy, macro one-vs-one AUC on probabilities, per-class recall, confusion matrix.
Three numbers, never mixed up:
  CV mean +- std   per-fold scores over the k validation folds (std with ddof=1)
  pooled           one score over all out-of-fold predictions, as the challenge scores a test set
  hold-out         images in no fold (vicreg.data.HOLDOUT), scored by the k fold models'
                   averaged probabilities; only when asked (confirmed configurations)
No number is selected on the data it reports: the head trains a fixed `eval.epochs`, or with
`eval.patience` > 0 stops early on an inner split of the training fold, never on the fold
being scored (Cawley & Talbot, JMLR 2010). Nor is anything fitted on its labels. The input
normalisation (a mean and std per channel) is the one exception to "training part only": the
frozen protocols normalise every image with the CV images' statistics, so that features are
extracted once (one encoder pass, not one per fold: on a trial that is the difference between
evaluation costing as much as pretraining and a small part of it). Those 2 x C numbers hold no
label, and pretraining itself saw the same CV images; the hold-out's and the test images'
pixels enter nothing. Fine-tuning (conv+head, full) normalises each fold with its training
part, as it pays no extra pass for it.
"""

from .features import extract_features
from .heads import FitSpec, make_head
from .metrics import METRICS, mean_std, scores
from .probe import probe_kappa, probe_score
from .protocol import EvalData, evaluate, fold_split
from .report import EvalReport, FoldResult, scores_csv

__all__ = ["METRICS", "EvalData", "EvalReport", "FitSpec", "FoldResult", "evaluate", "extract_features", "fold_split",
           "make_head", "mean_std", "probe_kappa", "probe_score", "scores", "scores_csv"]
