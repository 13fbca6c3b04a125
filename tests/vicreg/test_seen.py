"""vicreg/seen.py: what pretraining saw, in the words beside every verdict, from the record
pretrain_selection makes."""

from __future__ import annotations

from vicreg.seen import describe_pretrain, pretrain_note

CV_ONLY = {"pretrain.labelled_cv": 96, "pretrain.holdout": 0, "pretrain.test": 0}


def test_the_report_line_counts_each_part() -> None:
    assert describe_pretrain(CV_ONLY) == ("pretraining saw 96 labelled CV images, 0 hold-out images, "
                                          "0 unlabelled test images")
    line = describe_pretrain({**CV_ONLY, "pretrain.test": 20, "pretrain.unlabelled": 7})
    assert line.endswith("20 unlabelled test images, 7 unlabelled images")


def test_the_note_says_which_verdict_is_free_of_what_pretraining_saw() -> None:
    assert pretrain_note({}) == ""
    cv = pretrain_note(CV_ONLY)
    assert "the 96 CV images" in cv and "the hold-out verdict does not" in cv
    assert "unlabelled test images" not in cv
    both = pretrain_note({**CV_ONLY, "pretrain.test": 20, "pretrain.unlabelled": 7})
    assert "and 20 unlabelled test images and 7 unlabelled images (data.unlabelled)" in both
    leaked = pretrain_note({**CV_ONLY, "pretrain.holdout": 24})
    assert "hold-out images too" in leaked and "24 images" in leaked and "neither verdict is free" in leaked
