"""Features: the extractors (:mod:`~speechtune.features.extractors`: lhotse's Kaldi-compatible
fbank, kaldi-native-fbank, kaldifeat, a Kaldi model's MFCC + i-vector front end) and their
extraction into lilcom archives beside the cuts (:mod:`~speechtune.features.extract`)."""
