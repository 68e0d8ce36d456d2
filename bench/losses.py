"""k2 CTC vs torch CTC, and LF-MMI vs CTC: time per training step on one batch, side by side.

    .venv/bin/python bench/losses.py [--reps 20] [--batch 8] [--frames 300]

The batch: ``--batch`` WordNet sentences (the source domain's text) with random 80-dim
features of ``--frames`` frames (100 output frames after subsampling 3), tokens from a
500-piece sentencepiece model trained on WordNet, the default model of config/config.yaml.
LF-MMI's bigram P comes from every WordNet sentence (the size pretraining on the source
domain meets: its den graph is what LF-MMI's time grows with) and, for "LF-MMI target P",
from the target domain's command grammar (what fine-tuning meets) plus the batch's own
transcripts (so the same batch is accepted). LF-MMI runs twice per P: as the loss computes it
(an exact denominator: a forward-backward over all of ``ctc_topo o P``) and, marked "lattice
den", as it did before (num and den intersected by k2 and pruned to output_beam), on the same
batch, with the two losses' values side by side. Each repetition runs every
variant once, in turn, so load on the machine hits all of them alike; the medians are printed
with their ratios. Variants:

    loss: the loss and its backward on fixed log-probs (what the loss itself costs)
    step: model forward + loss + backward (what a training step costs)

Then a profile (cProfile, ``--profile-reps`` runs of each LF-MMI loss): where the loss's time
goes, by the functions that do the work.

The goals (the ASR-chain issue): k2 CTC step <= 1.5x torch CTC step; LF-MMI step <= 3x CTC step.
"""
import argparse
import cProfile
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from results_file import write_results  # noqa: E402
from local.source_text import wordnet_sentences  # noqa: E402
from local.target_grammar import sample_sentences  # noqa: E402
from speechtune.config import load_config  # noqa: E402
from speechtune.lang.graphs import build_graph_compiler  # noqa: E402
from speechtune.training.losses import MmiLoss, build_loss  # noqa: E402
from speechtune.models import build_model, num_parameters  # noqa: E402
from speechtune.lang.lang_dir import BASE_ALPHABET, bpe_lexicon, train_bpe, write_mapping  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--vocab-size", type=int, default=500)
    parser.add_argument("--profile-reps", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    config = load_config([])
    sentences = wordnet_sentences(min_words=4, max_words=20)

    with tempfile.TemporaryDirectory() as tmp:
        lang_dir = Path(tmp)
        bpe_config = dict(config["lang"]["bpe"], vocab_size=args.vocab_size)
        sp = train_bpe(sentences, BASE_ALPHABET, lang_dir / "bpe.model", bpe_config, seed=0)
        write_mapping(lang_dir / "tokens.txt", bpe_lexicon(sp, [])[1])
        compiler = build_graph_compiler(lang_dir, config["loss"])
    model = build_model({**config["model"], "feature_dim": 80, "num_tokens": compiler.num_tokens})
    ctc_loss = build_loss(dict(config["loss"], type="ctc"), compiler, model.subsampling_factor)
    # Sentences that fit the output frames (CTC needs a frame per token and per repeat).
    out_frames = model.output_lengths(args.frames)
    texts = [s for s, ids in zip(sentences, compiler.texts_to_ids(sentences))
             if 0.3 * out_frames < len(ids) < 0.5 * out_frames]
    texts = texts[:: len(texts) // args.batch][: args.batch]
    num_frames = [args.frames - 6 * i for i in range(args.batch)]
    # What K2SpeechRecognitionDataset gives for one supervision per cut.
    supervisions = {
        "sequence_idx": torch.arange(len(texts), dtype=torch.int32),
        "start_frame": torch.zeros(len(texts), dtype=torch.int32),
        "num_frames": torch.tensor(num_frames, dtype=torch.int32),
        "text": list(texts),
    }
    features = torch.randn(args.batch, args.frames, 80)
    logits = torch.randn(args.batch, out_frames, compiler.num_tokens, requires_grad=True)
    token_ids = compiler.texts_to_ids(texts)
    mmi = dict(config["loss"], type="mmi")
    mmi_losses = {
        "source P": build_loss(mmi, compiler, model.subsampling_factor, train_texts=sentences),
        "target P": build_loss(mmi, compiler, model.subsampling_factor, train_texts=texts + [
            s for intent in sample_sentences(config["seed"]).values() for s in intent
        ]),
    }
    # The computation before the exact denominator, on the same P.
    for name in list(mmi_losses):
        loss_fn = mmi_losses[name]
        mmi_losses[f"{name}, lattice den"] = MmiLoss(
            compiler, loss_fn.bigram, model.subsampling_factor, output_beam=mmi["output_beam"],
            den_scale=mmi["den_scale"], ctc_weight=mmi["ctc_weight"], exact_den=False)

    def torch_ctc(log_probs: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.ctc_loss(
            log_probs.transpose(0, 1),
            torch.tensor([t for ids in token_ids for t in ids]),
            input_lengths=model.output_lengths(torch.tensor(num_frames)),
            target_lengths=torch.tensor([len(ids) for ids in token_ids]),
            blank=0, reduction="sum",
        )

    losses: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "torch CTC": torch_ctc,
        "k2 CTC": lambda log_probs: ctc_loss(log_probs, supervisions)[0],
        **{f"LF-MMI {name}": lambda log_probs, loss_fn=loss_fn: loss_fn(log_probs, supervisions)[0]
           for name, loss_fn in mmi_losses.items()},
    }
    variants: Dict[str, Callable[[], None]] = {}
    for name, loss_of in losses.items():
        variants[f"loss {name}"] = lambda loss_of=loss_of: loss_of(logits.log_softmax(-1)).backward()
        variants[f"step {name}"] = lambda loss_of=loss_of: loss_of(model(features)).backward()

    times: Dict[str, List[float]] = {name: [] for name in variants}
    for rep in range(args.reps + 1):
        for name, run in variants.items():
            model.zero_grad()
            started = time.perf_counter()
            run()
            if rep > 0:  # the first round warms up allocators and caches
                times[name].append(time.perf_counter() - started)

    median = {name: statistics.median(t) for name, t in times.items()}

    # The losses' values: exact vs lattice denominator, on the fixed log-probs and on the model's.
    with torch.no_grad():
        inputs = {"log-probs": logits.log_softmax(-1), "model": model(features)}
    values = {name: {what: loss_fn(x, supervisions)[1] for what, x in inputs.items()}
              for name, loss_fn in mmi_losses.items()}
    frames = values["target P"]["model"]["frames"]
    profile = {name: profile_loss(loss_fn, logits, supervisions, args.profile_reps)
               for name, loss_fn in mmi_losses.items()}

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch} x {args.frames} "
          f"frames -> {out_frames} output frames, {compiler.num_tokens} tokens, "
          f"{sum(map(len, token_ids)) / len(token_ids):.1f} tokens/utterance")
    print(f"model: {config['model']['type']}, {num_parameters(model) / 1e6:.2f}M parameters (untrained: "
          f"near-uniform outputs, the largest lattices); output_beam {config['loss']['output_beam']}, "
          f"LF-MMI ctc_weight {config['loss']['ctc_weight']}")
    for name, loss_fn in mmi_losses.items():
        if loss_fn.den_forward is not None:
            print(f"LF-MMI {name}: bigram {loss_fn.bigram.num_arcs} arcs; den graph "
                  f"{loss_fn.den_graph.shape[0]} states, {loss_fn.den_graph.num_arcs} arcs")
    print(f"LF-MMI loss per frame ({frames} output frames), exact den vs lattice den (mmi part; ctc part alike):")
    for name in (n for n in mmi_losses if not n.endswith("lattice den")):
        for what in inputs:
            exact, lattice = values[name][what], values[f"{name}, lattice den"][what]
            print(f"  {name}, {what:<9}: {exact['loss'] / frames:.4f} vs {lattice['loss'] / frames:.4f} "
                  f"(mmi {exact['mmi'] / frames:.4f} vs {lattice['mmi'] / frames:.4f}: "
                  f"{100 * (exact['mmi'] - lattice['mmi']) / abs(lattice['mmi']):+.1f}%)")
    print(f"profile: ms per LF-MMI loss + backward on the fixed log-probs (cProfile, {args.profile_reps} runs; "
          f"cumulative, so 'backward' includes the k2 and den backward passes)")
    for name, parts in profile.items():
        print(f"  {name:<22} " + ", ".join(f"{part} {ms:.1f}" for part, ms in parts.items()))
    print(f"{'variant':<36} {'median ms':>10} {'min ms':>8}   (over {args.reps} interleaved repetitions)")
    for name, t in times.items():
        print(f"{name:<36} {1000 * median[name]:>10.1f} {1000 * min(t):>8.1f}")
    for kind in ("loss", "step"):
        ratios = [f"k2 CTC / torch CTC = {median[f'{kind} k2 CTC'] / median[f'{kind} torch CTC']:.2f}x"]
        ratios += [f"LF-MMI {name} / k2 CTC = {median[f'{kind} LF-MMI {name}'] / median[f'{kind} k2 CTC']:.2f}x"
                   for name in mmi_losses]
        print(f"{kind}: " + ", ".join(ratios))
    write_results("losses", {"batch": args.batch, "frames": args.frames, "reps": args.reps,
                             "mmi_loss_per_frame": {f"{name}, {what}": {k: round(v / frames, 4) for k, v in info.items()
                                                                        if k in ("loss", "mmi", "ctc")}
                                                    for name, by_input in values.items()
                                                    for what, info in by_input.items()},
                             "profile_ms": profile,
                             "median_ms": {name: round(1000 * m, 2) for name, m in median.items()},
                             "ratios": {f"{kind} {name} / k2 CTC": round(median[f"{kind} {name}"] / median[f"{kind} k2 CTC"], 2)
                                        for kind in ("loss", "step") for name in losses}})


# Where an LF-MMI loss's time goes: (module file, function) -> the part it is.
PROFILE_PARTS = {
    ("graphs.py", "compile_num_graphs"): "num graphs",
    ("autograd.py", "intersect_dense"): "k2 intersect_dense",
    ("fsa.py", "get_tot_scores"): "get_tot_scores",
    ("losses.py", "__call__"): "exact den (forward)",
    ("ctc_loss.py", "ctc_loss"): "k2 CTC (regularizer)",
    ("_tensor.py", "backward"): "backward",
}


def profile_loss(loss_fn: torch.nn.Module, logits: torch.Tensor, supervisions: dict, reps: int) -> Dict[str, float]:
    """ms per run of ``loss_fn`` + backward on fixed log-probs, split by PROFILE_PARTS, with the total."""
    loss_fn(logits.log_softmax(-1), supervisions)[0].backward()  # warm-up
    profiler = cProfile.Profile()
    started = time.perf_counter()
    for _ in range(reps):
        profiler.enable()
        loss_fn(logits.log_softmax(-1), supervisions)[0].backward()
        profiler.disable()
    total = (time.perf_counter() - started) / reps
    parts = {part: 0.0 for part in PROFILE_PARTS.values()}
    for (filename, _, function), (_, _, _, cumulative, _) in pstats.Stats(profiler).stats.items():
        part = PROFILE_PARTS.get((Path(filename).name, function))
        if part is not None:
            parts[part] += 1000 * cumulative / reps
    return {**{part: round(ms, 1) for part, ms in parts.items() if ms > 0}, "total": round(1000 * total, 1)}


if __name__ == "__main__":
    main()
