"""What pretraining saw, in words: the record `vicreg.data.pretrain_selection` makes
({"pretrain.labelled_cv": ..., "pretrain.holdout": ..., ...}) as a report line and as the
sentence beside the verdicts. Imports nothing heavy: the sweep's reports (and a --dry-run
worker, which loads no torch) use it."""

from __future__ import annotations


def describe_pretrain(record: dict) -> str:
    """'CV-labelled 96 + hold-out 0 of 24 + test 20 images' style line for reports."""
    extra = f", {record['pretrain.unlabelled']} unlabelled images" if record.get("pretrain.unlabelled") else ""
    return (f"pretraining saw {record['pretrain.labelled_cv']} labelled CV images, "
            f"{record['pretrain.holdout']} hold-out images, {record['pretrain.test']} unlabelled test images{extra}")


def pretrain_note(record: dict) -> str:
    """The sentence beside the verdicts: what pretraining saw, and so which verdict is free of it."""
    if not record:
        return ""
    if record.get("pretrain.holdout"):
        return (f"pretraining saw the hold-out images too (data.holdout_in_pretrain; {record['pretrain.holdout']} "
                f"images, unlabelled): neither verdict is free of that advantage")
    test = f" and {record['pretrain.test']} unlabelled test images" if record.get("pretrain.test") else ""
    if record.get("pretrain.unlabelled"):
        test += f" and {record['pretrain.unlabelled']} unlabelled images (data.unlabelled)"
    return (f"pretraining saw the {record['pretrain.labelled_cv']} CV images, the validation folds' included "
            f"(unlabelled){test}, but not the hold-out's: the CV verdict includes that advantage, the hold-out "
            f"verdict does not")
