"""Scoring: Kaldi's %WER line with per-utterance and per-speaker files
(:mod:`~speechtune.scoring.wer`), and bootstrap intervals for a WER and for the difference of
two systems (:mod:`~speechtune.scoring.significance`)."""
