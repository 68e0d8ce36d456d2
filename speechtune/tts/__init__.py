"""Speech synthesis: a Tacotron-2-style acoustic model pretrained on the source domain's many
voices, fine-tuned to a voice it never heard, and judged against the same minutes trained from
nothing. The ASR chain's ideas carry over: stages in the Snakefile, the regularized objective
``alpha * L_pre + (1 - alpha) * L_task``, systems compared in one report::

    from speechtune.tts.features import log_mel, MEL
    mel = log_mel(samples)                                 # (frames, 80), 16 kHz float32 in
    from speechtune.tts.vocoder import VOCODERS
    audio = VOCODERS.get("griffin_lim")().vocode(mel)      # back to 16 kHz samples

Modules: :mod:`~speechtune.tts.features` (the mel spectrogram, lhotse's Fbank),
:mod:`~speechtune.tts.vocoder` (mel to audio, registered), :mod:`~speechtune.tts.model`
(Tacotron 2), :mod:`~speechtune.tts.training` (losses, the loop), :mod:`~speechtune.tts.data`
(phones and mels of a cut set, batches), :mod:`~speechtune.tts.evaluation` (distortion,
attention health), :mod:`~speechtune.tts.listening` (the listening page and MOS).
"""
