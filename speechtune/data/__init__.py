"""Data in and out: Kaldi text tables (:mod:`~speechtune.data.tables`), Kaldi data dirs <->
lhotse manifests (:mod:`~speechtune.data.kaldi_dir`, the ``prepare`` stage) and the one way to
read a cut manifest a stage depends on (:mod:`~speechtune.data.cuts`)."""
