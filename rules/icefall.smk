# A released icefall model as the pretrained system (pretrained.source: icefall;
# config/icefall_librispeech.yaml): its checkpoint imported as exp/pretrained, and every domain's
# lang dir built over its phones and lexicon. These rules then take the place of pretrain and
# lang (ruleorder); every other rule (finetune, scratch, decode) is the default's.
PRETRAINED = config.get("pretrained", {"source": "pretrain"})

if PRETRAINED["source"] == "icefall":
    _missing = [key for key in ("checkpoint", "lang_dir") if not PRETRAINED.get(key)]
    if _missing:
        raise ValueError(f"pretrained.source is icefall: set pretrained.{' and pretrained.'.join(_missing)} "
                         "(the release's exp/pretrained.pt and data/lang_phone)")
    # Checked here, not left to Snakemake: where an input of these rules is missing, Snakemake
    # would quietly take pretrain and lang instead (ruleorder only orders rules that can run).
    _absent = [f"pretrained.{key} {PRETRAINED[key]}" for key in ("checkpoint", "lang_dir", "lexicon")
               if PRETRAINED.get(key) and not os.path.exists(PRETRAINED[key])]
    if _absent:
        raise ValueError(f"{', '.join(_absent)}: no such file or directory; download the release first "
                         "(README: Starting from a released icefall model)")
    # What the released LibriSpeech model was trained on: lhotse Fbank, 80 bins, 16 kHz, phones.
    _expected = {"lang.unit": (config["lang"]["unit"], "phone"),
                 "features.num_mel_bins": (config["features"]["num_mel_bins"], 80),
                 "prepare.sample_rate": (config["prepare"]["sample_rate"], 16000)}
    _wrong = [f"{key} is {value!r}, the model's is {want!r}"
              for key, (value, want) in _expected.items() if value != want]
    if _wrong:
        raise ValueError(f"pretrained.source icefall (tdnn_lstm_ctc): {'; '.join(_wrong)}: layer "
                         "config/icefall_librispeech.yaml last")

    rule import_icefall:
        """The released icefall checkpoint, checked key for key against icefall's TdnnLstm, as
        the pretrained system (exp/pretrained) with the release's tokens."""
        input:
            checkpoint=PRETRAINED["checkpoint"],
            lang=PRETRAINED["lang_dir"],
        output:
            model=f"{ex.system_dir(ex.BASELINE)}/model.pt",
            provenance=f"{ex.system_dir(ex.BASELINE)}/provenance.json",
        threads: rule_threads("import_icefall")
        resources:
            **rule_resources("import_icefall"),
        log:
            "logs/import/icefall.log",
        shell:
            "{PYTHON} -m stages.import_icefall model {input.checkpoint} {input.lang} "
            + ex.system_dir(ex.BASELINE) + " > {log} 2>&1"

    rule icefall_lang:
        """A domain's lang dir over the released model's tokens, words and lexicon, with the
        domain's LM and HLG (or the released HLG.pt, pretrained.released_hlg)."""
        input:
            cuts=ex.manifest_cuts("{domain}_train"),
            released=PRETRAINED["lang_dir"],
            lexicon=[PRETRAINED["lexicon"]] if PRETRAINED.get("lexicon") else [],
        output:
            directory(ex.lang_dir(config, "{domain}")),
        params:
            cfg=section("lang"),
            seed=SEED,
            lexicon=lambda w, input: f"--lexicon {input.lexicon[0]}" if input.lexicon else "",
            hlg="--released-hlg" if PRETRAINED.get("released_hlg") else "",
        threads: rule_threads("icefall_lang")
        resources:
            **rule_resources("icefall_lang"),
        log:
            "logs/lang/{domain}.log",
        shell:
            "{PYTHON} -m stages.import_icefall lang {input.released} {params.lexicon} {params.hlg} "
            "--lm-text {wildcards.domain}={input.cuts} {output} "
            "--config-json {params.cfg:q} --seed {params.seed} > {log} 2>&1"

    ruleorder: import_icefall > pretrain
    ruleorder: icefall_lang > lang
