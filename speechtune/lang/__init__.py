"""Lang dirs and graphs: the icefall-compatible lang dir with its lexicon, LMs and HLG
(:mod:`~speechtune.lang.lang_dir`, the ``lang`` stage) and the k2 training graphs built from
one (:mod:`~speechtune.lang.graphs`: CTC graphs, LF-MMI's token bigram, denominator and
numerator graphs)."""
