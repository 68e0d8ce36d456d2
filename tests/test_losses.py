"""k2 CTC and LF-MMI losses and their graphs, on lang dirs written here by hand: a char-level
lexicon lang dir and a tiny sentencepiece one (independent of the lang stage)."""
import math
from pathlib import Path
from typing import Dict, List, Sequence

import k2
import pytest
import sentencepiece as spm
import torch

from speechtune.config import load_config
from speechtune.lang.graphs import BpeCtcTrainingGraphCompiler, build_graph_compiler, compile_den_graph, compile_num_graphs, CtcTrainingGraphCompiler, estimate_token_bigram, load_fsa, save_fsa
from speechtune.training.losses import DenominatorForward, MmiLoss, build_loss, encode_supervisions
from speechtune.models import build_model
from speechtune.models.layers import ORTHONORMAL_CONSTRAINT_INTERVAL
from tests.conftest import REPO_ROOT

SENTENCES = [
    "TURN ON THE KITCHEN LIGHTS", "TURN OFF THE LIGHTS", "SET A TIMER FOR TEN MINUTES",
    "PLAY SOME JAZZ", "WHAT IS THE WEATHER", "TURN UP THE VOLUME", "STOP THE MUSIC",
    "SET AN ALARM FOR SEVEN", "PLAY THE NEWS", "TURN DOWN THE HEAT", "WHAT TIME IS IT",
    "OPEN THE DOOR", "CLOSE THE WINDOW", "CALL MOM", "SET A TIMER FOR FIVE MINUTES",
]
LOSS_PARAMS = {"type": "ctc", "output_beam": 10.0, "den_scale": 1.0, "ctc_weight": 0.0, "oov": "<UNK>"}


def write_bpe_lang_dir(lang_dir: Path, sentences: Sequence[str], vocab_size: int) -> Path:
    """tokens.txt + bpe.model as icefall's lang_bpe: <blk>=0, <sos/eos>=1, <unk>=2, pieces."""
    lang_dir.mkdir(parents=True, exist_ok=True)
    text = lang_dir / "text"
    text.write_text("\n".join(sentences) + "\n")
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(lang_dir / "bpe"), vocab_size=vocab_size,
        model_type="unigram", character_coverage=1.0, user_defined_symbols=["<blk>", "<sos/eos>"],
        unk_id=2, bos_id=-1, eos_id=-1, minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_file=str(lang_dir / "bpe.model"))
    tokens = [sp.id_to_piece(i) for i in range(sp.get_piece_size())] + ["#0"]
    (lang_dir / "tokens.txt").write_text("".join(f"{t} {i}\n" for i, t in enumerate(tokens)))
    return lang_dir


def write_char_lang_dir(lang_dir: Path, lexicon: Dict[str, List[List[str]]]) -> Path:
    """tokens.txt, words.txt, lexicon.txt and L.pt (k2, no silence) for a char lexicon;
    a word may have several pronunciations."""
    lang_dir.mkdir(parents=True, exist_ok=True)
    chars = sorted({c for prons in lexicon.values() for p in prons for c in p})
    token_ids = {c: i for i, c in enumerate(["<blk>"] + chars)}
    words = ["<eps>"] + sorted(lexicon) + ["#0"]
    word_ids = {w: i for i, w in enumerate(words)}
    tokens = [*token_ids, "#0"]
    (lang_dir / "tokens.txt").write_text("".join(f"{t} {i}\n" for i, t in enumerate(tokens)))
    (lang_dir / "words.txt").write_text("".join(f"{w} {i}\n" for w, i in word_ids.items()))
    (lang_dir / "lexicon.txt").write_text(
        "".join(f"{w} {' '.join(p)}\n" for w in sorted(lexicon) for p in lexicon[w])
    )
    # L: state 0 loops over words; a word's first arc outputs the word id.
    arcs, next_state = [], 1
    for word in sorted(lexicon):
        for pron in lexicon[word]:
            states = [0] + list(range(next_state, next_state + len(pron) - 1)) + [0]
            next_state += len(pron) - 1
            for i, token in enumerate(pron):
                arcs.append((states[i], states[i + 1], token_ids[token], word_ids[word] if i == 0 else 0))
    final = next_state
    arcs.append((0, final, -1, -1))
    lines = [f"{s} {d} {t} {w} 0.0" for s, d, t, w in sorted(arcs)] + [str(final)]
    L = k2.Fsa.from_str("\n".join(lines), acceptor=False)
    torch.save(L.as_dict(), lang_dir / "L.pt")
    return lang_dir


CHAR_LEXICON = {
    "ON": [["O", "N"]], "OFF": [["O", "F", "F"]], "NO": [["N", "O"]],
    "TOE": [["T", "O", "E"], ["T", "O"]], "NET": [["N", "E", "T"]], "<UNK>": [["E"]],
}


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory) -> Path:
    return write_bpe_lang_dir(tmp_path_factory.mktemp("lang_bpe"), SENTENCES, vocab_size=40)


@pytest.fixture(scope="module")
def char_dir(tmp_path_factory) -> Path:
    return write_char_lang_dir(tmp_path_factory.mktemp("lang_char"), CHAR_LEXICON)


def supervisions_for(num_frames: Sequence[int], texts: Sequence[str]) -> dict:
    """What K2SpeechRecognitionDataset gives for one supervision per cut."""
    n = len(texts)
    return {
        "sequence_idx": torch.arange(n, dtype=torch.int32),
        "start_frame": torch.zeros(n, dtype=torch.int32),
        "num_frames": torch.tensor(num_frames, dtype=torch.int32),
        "text": list(texts),
    }


def tiny_model(num_tokens: int):
    return build_model({
        "type": "tdnnf", "feature_dim": 20, "num_tokens": num_tokens, "input_norm": "batchnorm",
        "num_layers": 4, "full_rate_layers": 2, "hidden_dim": 64, "bottleneck_dim": 24,
        "prefinal_dim": 32, "bypass_scale": 0.66, "subsampling_factor": 3, "dropout": 0.0,
    })


def greedy(log_probs: torch.Tensor) -> List[int]:
    """Best path, repeats merged, blanks dropped."""
    best = log_probs.argmax(dim=-1).tolist()
    return [t for i, t in enumerate(best) if t != 0 and (i == 0 or t != best[i - 1])]


def test_encode_supervisions_subsamples_caps_and_sorts():
    supervisions = {
        "sequence_idx": torch.tensor([0, 1, 2, 2]),
        "start_frame": torch.tensor([0, 0, 0, 12]),
        "num_frames": torch.tensor([10, 30, 12, 30]),
        "text": ["a", "b", "c", "d"],
    }
    segments, texts = encode_supervisions(supervisions, subsampling_factor=3, num_output_frames=10)
    # ceil(10/3)=4, ceil(30/3)=10, ceil(12/3)=4 (tie: batch order kept), start 12//3=4 caps d at 6.
    assert segments.dtype == torch.int32 and segments.device.type == "cpu"
    assert segments.tolist() == [[1, 0, 10], [2, 4, 6], [0, 0, 4], [2, 0, 4]]
    assert texts == ["b", "d", "a", "c"]


def test_build_graph_compiler_picks_bpe_or_lexicon(bpe_dir, char_dir):
    bpe = build_graph_compiler(bpe_dir, LOSS_PARAMS)
    char = build_graph_compiler(char_dir, LOSS_PARAMS)
    assert isinstance(bpe, BpeCtcTrainingGraphCompiler) and bpe.num_tokens == 40  # "#0" is no output
    assert isinstance(char, CtcTrainingGraphCompiler) and char.num_tokens == 6  # <blk> E F N O T
    # First pronunciation for P; unknown words become <UNK>.
    ids = char.texts_to_ids(["TOE XYZ"])[0]
    assert [char.token_table[i] for i in ids] == ["T", "O", "E", "E"]


def test_lexicon_transcript_accepts_every_pronunciation(char_dir):
    compiler = build_graph_compiler(char_dir, LOSS_PARAMS)
    transcript = k2.remove_epsilon(compiler.transcript_fsas(["TOE ON"]))[0]
    t = compiler.token_table

    def accepts(tokens: str) -> bool:
        path = k2.linear_fsa([t[c] for c in tokens.split()])
        return k2.connect(k2.intersect(transcript, k2.arc_sort(path))).num_arcs > 0

    assert accepts("T O E O N") and accepts("T O O N")
    assert not accepts("T O E N O")


def test_k2_ctc_equals_torch_ctc(bpe_dir):
    torch.manual_seed(0)
    compiler = build_graph_compiler(bpe_dir, LOSS_PARAMS)
    # Random outputs spread the mass over many paths: a beam of 10 drops enough of them
    # to move gradients by ~1e-2; at 20 the lattice keeps all that matters.
    loss_fn = build_loss(dict(LOSS_PARAMS, output_beam=20.0), compiler, subsampling_factor=3)
    texts = SENTENCES[:5]
    num_frames = [150, 90, 149, 120, 100]  # T' = 50, 30, 50, 40, 34
    logits = torch.randn(len(texts), 50, compiler.num_tokens, requires_grad=True)
    loss, info = loss_fn(logits.log_softmax(-1), supervisions_for(num_frames, texts))
    (grad_k2,) = torch.autograd.grad(loss, logits)

    targets = compiler.texts_to_ids(texts)
    expected = torch.nn.functional.ctc_loss(
        logits.log_softmax(-1).transpose(0, 1),
        torch.tensor([t for ids in targets for t in ids]),
        input_lengths=torch.tensor([(n + 2) // 3 for n in num_frames]),
        target_lengths=torch.tensor([len(ids) for ids in targets]),
        blank=0, reduction="sum",
    )
    (grad_torch,) = torch.autograd.grad(expected, logits)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    assert torch.allclose(grad_k2, grad_torch, atol=1e-4)
    assert info == {"loss": pytest.approx(loss.item()), "frames": 204, "utterances": 5, "skipped": 0}


def test_ctc_loss_skips_utterances_too_short_for_their_transcript(bpe_dir):
    compiler = build_graph_compiler(bpe_dir, LOSS_PARAMS)
    loss_fn = build_loss(LOSS_PARAMS, compiler, subsampling_factor=3)
    logits = torch.randn(2, 30, compiler.num_tokens, requires_grad=True)
    loss, info = loss_fn(logits.log_softmax(-1), supervisions_for([90, 3], SENTENCES[:2]))
    loss.backward()
    assert math.isfinite(loss.item()) and torch.isfinite(logits.grad).all()
    assert (info["utterances"], info["skipped"], info["frames"]) == (1, 1, 30)


def test_ctc_training_overfits_one_utterance(char_dir):
    torch.manual_seed(0)
    compiler = build_graph_compiler(char_dir, LOSS_PARAMS)
    loss_fn = build_loss(LOSS_PARAMS, compiler, subsampling_factor=3)
    model = tiny_model(compiler.num_tokens)
    text = "NET ON OFF"  # one pronunciation each: the greedy path must be this one
    features = torch.randn(1, 60, 20)
    supervisions = supervisions_for([60], [text])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for step in range(40):
        loss, info = loss_fn(model(features), supervisions)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if (step + 1) % ORTHONORMAL_CONSTRAINT_INTERVAL == 0:
            model.constrain_orthonormal()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    model.eval()
    with torch.no_grad():
        hyp = greedy(model(features)[0])
    assert hyp == compiler.texts_to_ids([text])[0]


def test_token_bigram_is_the_ml_estimate_of_seen_bigrams(tmp_path):
    P = estimate_token_bigram([[1, 2], [1, 3], [1, 2, 2]])

    def log_prob(ids: List[int]) -> float:
        lattice = k2.intersect(P, k2.arc_sort(k2.linear_fsa(ids)))
        return k2.create_fsa_vec([lattice]).get_tot_scores(log_semiring=True, use_double_scores=True).item()

    # P(1|<s>)=1, P(2|1)=2/3, P(</s>|2)=2/3, P(2|2)=1/3; unseen bigrams have no path.
    assert log_prob([1, 2]) == pytest.approx(math.log(2 / 3 * 2 / 3))
    assert log_prob([1, 2, 2]) == pytest.approx(math.log(2 / 3 * 1 / 3 * 2 / 3))
    assert log_prob([2, 1]) == -math.inf
    save_fsa(P, tmp_path / "P.pt")
    assert str(load_fsa(tmp_path / "P.pt")) == str(P)


def test_den_graph_accepts_exactly_the_bigram_token_sequences(char_dir):
    compiler = build_graph_compiler(char_dir, LOSS_PARAMS)
    train_texts = ["NO ON", "NET"]
    den = compile_den_graph(compiler.ctc_topo, estimate_token_bigram(compiler.texts_to_ids(train_texts)))
    seen = compile_num_graphs(den, compiler.transcript_fsas(["NO ON", "NET", "NO NET"]))
    unseen = compile_num_graphs(den, compiler.transcript_fsas(["ON NO", "OFF"]))  # never start with O
    assert all(seen[i].num_arcs > 0 for i in range(3))
    assert all(unseen[i].num_arcs == 0 for i in range(2))


def mmi_setup(bpe_dir: Path, ctc_weight: float = 0.0):
    compiler = build_graph_compiler(bpe_dir, LOSS_PARAMS)
    params = dict(LOSS_PARAMS, type="mmi", ctc_weight=ctc_weight)
    return compiler, build_loss(params, compiler, subsampling_factor=3, train_texts=SENTENCES)


@pytest.mark.parametrize("ctc_weight", [0.0, 0.5])
def test_mmi_loss_and_gradient_are_finite(bpe_dir, ctc_weight):
    torch.manual_seed(0)
    compiler, loss_fn = mmi_setup(bpe_dir, ctc_weight)
    logits = torch.randn(4, 40, compiler.num_tokens, requires_grad=True)
    loss, info = loss_fn(logits.log_softmax(-1), supervisions_for([120, 100, 90, 118], SENTENCES[:4]))
    loss.backward()
    assert math.isfinite(loss.item()) and loss.item() > 0
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert (info["utterances"], info["skipped"], info["frames"]) == (4, 0, 40 + 34 + 30 + 40)
    expected = info["mmi"] + ctc_weight * info.get("ctc", 0.0)
    assert info["loss"] == pytest.approx(expected, rel=1e-6)


def test_mmi_prefers_outputs_on_the_reference_path(bpe_dir):
    torch.manual_seed(0)
    compiler, loss_fn = mmi_setup(bpe_dir)
    texts = SENTENCES[:3]
    token_ids = compiler.texts_to_ids(texts)
    frames = 2 * max(len(ids) for ids in token_ids) + 4
    perfect = torch.full((len(texts), frames, compiler.num_tokens), -10.0)
    for n, ids in enumerate(token_ids):
        path = [label for t in ids for label in (t, 0)] + [0] * frames  # token, blank, ..., blanks
        perfect[n, torch.arange(frames), torch.tensor(path[:frames])] = 0.0
    supervisions = supervisions_for([3 * frames] * 3, texts)
    perfect_loss, _ = loss_fn(perfect.log_softmax(-1), supervisions)
    random_loss, _ = loss_fn(torch.randn(perfect.shape).log_softmax(-1), supervisions)
    assert 0 <= perfect_loss.item() < 1.0 < random_loss.item()


def test_mmi_skips_transcripts_the_bigram_never_saw(bpe_dir):
    compiler, loss_fn = mmi_setup(bpe_dir)
    logits = torch.randn(2, 40, compiler.num_tokens, requires_grad=True)
    supervisions = supervisions_for([120, 120], ["PLAY SOME JAZZ", "JAZZ SOME PLAY"])
    loss, info = loss_fn(logits.log_softmax(-1), supervisions)
    loss.backward()
    assert (info["utterances"], info["skipped"]) == (1, 1)
    assert torch.isfinite(logits.grad).all()


def k2_den_tot_scores(den_graph: k2.Fsa, log_probs: torch.Tensor, segments: torch.Tensor, beam: float) -> torch.Tensor:
    """The den graph's log-likelihood per segment by k2: intersect_dense pruned to ``beam``."""
    n = len(segments)
    graphs = k2.index_fsa(k2.create_fsa_vec([den_graph]), torch.zeros(n, dtype=torch.int32))
    lattices = k2.intersect_dense(graphs, k2.DenseFsaVec(log_probs, segments), output_beam=beam,
                                  a_to_b_map=torch.arange(n, dtype=torch.int32))
    return lattices.get_tot_scores(log_semiring=True, use_double_scores=True)


@pytest.mark.parametrize("sharpness", [1.0, 8.0])  # near-uniform outputs, and peaked ones
def test_exact_den_equals_k2_unpruned_intersection(bpe_dir, sharpness):
    torch.manual_seed(0)
    compiler = build_graph_compiler(bpe_dir, LOSS_PARAMS)
    den_graph = compile_den_graph(compiler.ctc_topo, estimate_token_bigram(compiler.texts_to_ids(SENTENCES)))
    logits = sharpness * torch.randn(3, 30, compiler.num_tokens)
    # Sorted by duration as k2 needs; two segments share sequence 1, one starting at frame 12.
    segments = torch.tensor([[0, 0, 30], [1, 0, 12], [2, 3, 11], [1, 12, 9]], dtype=torch.int32)
    weights = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)  # a gradient per segment

    def tot_and_grad(den_tot) -> tuple:
        log_probs = logits.log_softmax(-1).requires_grad_()
        tot = den_tot(log_probs)
        (grad,) = torch.autograd.grad((weights * tot).sum(), log_probs)
        return tot.detach(), grad

    # A beam of 1000 nats keeps every arc: k2's lattice is then the whole intersection.
    expected, expected_grad = tot_and_grad(lambda lp: k2_den_tot_scores(den_graph, lp, segments, beam=1000.0))
    tot, grad = tot_and_grad(lambda lp: DenominatorForward(den_graph)(lp, segments))
    assert tot.dtype == torch.float64 and torch.isfinite(expected).all()
    assert torch.allclose(tot, expected, rtol=0, atol=1e-6)
    assert torch.allclose(grad, expected_grad, rtol=0, atol=1e-6)
    # The pruned lattice (output_beam 10, the loss's before) leaves paths out: less mass.
    pruned = k2_den_tot_scores(den_graph, logits.log_softmax(-1), segments, beam=10.0)
    assert (pruned <= tot + 1e-9).all()


@pytest.mark.parametrize("ctc_weight", [0.0, 0.5])
def test_mmi_loss_equals_the_lattice_computation_without_pruning(bpe_dir, ctc_weight):
    """The exact denominator computes what the previous loss (k2 lattices for num and den)
    computes when its output_beam prunes nothing; the numerator is k2's as before."""
    torch.manual_seed(0)
    compiler = build_graph_compiler(bpe_dir, LOSS_PARAMS)
    bigram = estimate_token_bigram(compiler.texts_to_ids(SENTENCES))
    kwargs = dict(output_beam=1000.0, den_scale=0.9, ctc_weight=ctc_weight)
    exact = MmiLoss(compiler, bigram, subsampling_factor=3, **kwargs)
    lattice = MmiLoss(compiler, bigram, subsampling_factor=3, exact_den=False, **kwargs)
    logits = torch.randn(4, 40, compiler.num_tokens)
    supervisions = supervisions_for([120, 100, 90, 118], SENTENCES[:4])
    results = []
    for loss_fn in (exact, lattice):
        log_probs = logits.log_softmax(-1).requires_grad_()
        loss, info = loss_fn(log_probs, supervisions)
        (grad,) = torch.autograd.grad(loss, log_probs)
        results.append((loss.item(), info, grad))
    (loss, info, grad), (expected, expected_info, expected_grad) = results
    assert loss == pytest.approx(expected, rel=1e-9, abs=1e-6)
    assert info == {k: pytest.approx(v, rel=1e-9, abs=1e-6) for k, v in expected_info.items()}
    assert torch.allclose(grad, expected_grad, rtol=0, atol=1e-6)


@pytest.mark.parametrize("loss_type", ["ctc", "mmi"])
def test_config_loss_section_builds(bpe_dir, loss_type):
    config = load_config([REPO_ROOT / "config/config.yaml", REPO_ROOT / "config/tiny.yaml"])
    params = dict(config["loss"], type=loss_type)
    compiler = build_graph_compiler(bpe_dir, params)
    model = build_model({**config["model"], "feature_dim": 80, "num_tokens": compiler.num_tokens})
    loss_fn = build_loss(params, compiler, model.subsampling_factor, train_texts=SENTENCES)
    loss, info = loss_fn(model(torch.randn(2, 90, 80)), supervisions_for([90, 84], SENTENCES[:2]))
    loss.backward()
    assert math.isfinite(loss.item()) and info["utterances"] == 2
