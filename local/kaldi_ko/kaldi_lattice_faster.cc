// kaldi_lattice_faster: Kaldi's LatticeFasterDecoder (the C++ of the kaldi-hmm-gmm package, a
// maintained port of Kaldi's decoder/lattice-faster-decoder.cc) opened to Python with what that
// package's own binding leaves out: decoding chunk by chunk, the online traceback Kaldi's
// silence weighting reads, the best path, and the lattice's word sequences. Built by
// tools/build_kaldi_lattice_faster.sh against Debian's OpenFst; used by local/kaldi_ko/decoder.py.
//
//   graph = kaldi_lattice_faster.Graph.read("exp/kaldi_ko/graph/HCLG.fst")
//   decoder = kaldi_lattice_faster.LatticeFasterDecoder(graph, tid_to_pdf, num_pdfs,
//       kaldi_lattice_faster.DecoderConfig(beam=10, max_active=3000, min_active=200,
//                                          lattice_beam=2))
//   decoder.advance(loglikes)                   # (frames, num_pdfs) float32, any number of times
//   decoder.traceback()                         # transition-ids of the cheapest token's path
//   decoder.best_path(use_final_probs=True)     # OpenFst text of a Kaldi Lattice
//   decoder.finalize(); decoder.word_lattice(beam=2)
//
// Lattices come back in OpenFst's text form, weights as "graph,acoustic" (Kaldi's
// LatticeWeight), the start state's lines first.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <fst/script/compile-impl.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "kaldi-hmm-gmm/csrc/lattice-faster-decoder.h"

namespace py = pybind11;

namespace {

using Graph = fst::VectorFst<fst::StdArc>;
using Token = khg::decoder::BackpointerToken;

// Tokens with backpointers, as Kaldi's LatticeFasterOnlineDecoder (and Vosk's incremental
// decoder) keep them, for Kaldi's BestPathEnd + TraceBackBestPath.
class Decoder : public khg::LatticeFasterDecoderTpl<Graph, Token> {
 public:
  using khg::LatticeFasterDecoderTpl<Graph, Token>::LatticeFasterDecoderTpl;

  // The transition-ids, one per decoded frame, from the cheapest token of the last frame (the
  // first of equal ones, final weights ignored: BestPathEnd(use_final_probs=false)) back along
  // each token's best predecessor, through the cheapest link to it (TraceBackBestPath).
  std::vector<int32_t> Traceback() const {
    std::vector<int32_t> transition_ids;
    if (NumFramesDecoded() == 0) return transition_ids;
    Token *best = nullptr;
    float best_cost = std::numeric_limits<float>::infinity();
    for (Token *tok = active_toks_.back().toks; tok != nullptr; tok = tok->next) {
      if (tok->tot_cost < best_cost) {
        best_cost = tok->tot_cost;
        best = tok;
      }
    }
    for (Token *tok = best; tok != nullptr && tok->backpointer != nullptr; tok = tok->backpointer) {
      float best_link = std::numeric_limits<float>::infinity();
      int32_t ilabel = 0;
      for (auto *link = tok->backpointer->links; link != nullptr; link = link->next) {
        const float cost = link->graph_cost + link->acoustic_cost;
        if (link->next_tok == tok && cost < best_link) {
          best_link = cost;
          ilabel = link->ilabel;
        }
      }
      if (ilabel != 0) transition_ids.push_back(ilabel);
    }
    std::reverse(transition_ids.begin(), transition_ids.end());
    return transition_ids;
  }
};

// The network's log-likelihoods as the decoder reads them: frame t, transition-id i gives the
// log-likelihood of pdf(i) (acoustic scale 1, as chain models use). Frames arrive in chunks; the
// last frame is known once the input is finished.
class ChunkedDecodable : public khg::DecodableInterface {
 public:
  ChunkedDecodable(std::vector<int32_t> tid_to_pdf, int32_t num_pdfs)
      : tid_to_pdf_(std::move(tid_to_pdf)), num_pdfs_(num_pdfs) {}

  void Append(const float *rows, int64_t num_rows) {
    loglikes_.insert(loglikes_.end(), rows, rows + num_rows * num_pdfs_);
  }
  void InputFinished() { input_finished_ = true; }
  int32_t num_pdfs() const { return num_pdfs_; }

  float LogLikelihood(int32_t frame, int32_t tid) override {
    return loglikes_[static_cast<int64_t>(frame) * num_pdfs_ + tid_to_pdf_[tid]];
  }
  int32_t NumFramesReady() const override {
    return static_cast<int32_t>(loglikes_.size() / num_pdfs_);
  }
  bool IsLastFrame(int32_t frame) const override {
    return input_finished_ && frame == NumFramesReady() - 1;
  }
  int32_t NumIndices() const override { return static_cast<int32_t>(tid_to_pdf_.size()) - 1; }

 private:
  std::vector<int32_t> tid_to_pdf_;
  int32_t num_pdfs_;
  std::vector<float> loglikes_;
  bool input_finished_ = false;
};

std::string LatticeText(const fst::Lattice &lattice) {
  std::ostringstream out;
  out.precision(9);
  auto print_state = [&](int32_t state) {
    for (fst::ArcIterator<fst::Lattice> it(lattice, state); !it.Done(); it.Next()) {
      const fst::LatticeArc &arc = it.Value();
      out << state << ' ' << arc.nextstate << ' ' << arc.ilabel << ' ' << arc.olabel << ' '
          << arc.weight.Value1() << ',' << arc.weight.Value2() << '\n';
    }
    const fst::LatticeWeight final_weight = lattice.Final(state);
    if (final_weight != fst::LatticeWeight::Zero())
      out << state << ' ' << final_weight.Value1() << ',' << final_weight.Value2() << '\n';
  };
  if (lattice.Start() == fst::kNoStateId) return "";
  print_state(lattice.Start());
  for (int32_t state = 0; state < lattice.NumStates(); ++state)
    if (state != lattice.Start()) print_state(state);
  return out.str();
}

class LatticeFasterDecoder {
 public:
  LatticeFasterDecoder(std::shared_ptr<Graph> graph,
                       py::array_t<int32_t, py::array::c_style | py::array::forcecast> tid_to_pdf,
                       int32_t num_pdfs, const khg::LatticeFasterDecoderConfig &config)
      : graph_(std::move(graph)),
        decodable_(std::vector<int32_t>(tid_to_pdf.data(), tid_to_pdf.data() + tid_to_pdf.size()),
                   num_pdfs),
        decoder_(*graph_, config) {
    decoder_.InitDecoding();
  }

  void Advance(py::array_t<float, py::array::c_style | py::array::forcecast> loglikes) {
    if (finalized_) throw std::logic_error("advance() after finalize()");
    if (loglikes.ndim() != 2 || loglikes.shape(1) != decodable_.num_pdfs())
      throw std::invalid_argument("log-likelihoods must be (frames, " +
                                  std::to_string(decodable_.num_pdfs()) + ")");
    decodable_.Append(loglikes.data(), loglikes.shape(0));
    py::gil_scoped_release release;
    decoder_.AdvanceDecoding(&decodable_);
  }

  // Kaldi's FinalizeDecoding: the final frame's tokens pruned with final weights; afterwards
  // only lattices with final weights exist.
  void Finalize() {
    if (finalized_) return;
    decodable_.InputFinished();
    py::gil_scoped_release release;
    decoder_.AdvanceDecoding(&decodable_);
    decoder_.FinalizeDecoding();
    finalized_ = true;
  }

  int32_t NumFramesDecoded() const { return decoder_.NumFramesDecoded(); }

  py::array_t<int32_t> Traceback() const {
    const std::vector<int32_t> transition_ids = decoder_.Traceback();
    return py::array_t<int32_t>(transition_ids.size(), transition_ids.data());
  }

  // use_final_probs=false: every token of the last frame counts as final at no cost.
  std::string BestPath(bool use_final_probs) const {
    fst::Lattice path;
    if (NumFramesDecoded() > 0) decoder_.GetBestPath(&path, use_final_probs);
    return LatticeText(path);
  }

  // The word sequences whose best path costs at most `beam` more than the lattice's best, each
  // once with its best path's (graph, acoustic) costs: the raw lattice (final weights counted)
  // projected on words, epsilons removed, pruned, determinized in Kaldi's lattice semiring
  // (a word sequence keeps its cheapest path's cost pair, as Kaldi's lattice determinization
  // does) and pruned again, as the lattice Vosk's result is read from.
  std::string WordLattice(float beam) const {
    fst::Lattice lattice;
    if (NumFramesDecoded() == 0 || !decoder_.GetRawLattice(&lattice, true)) return "";
    fst::Project(&lattice, fst::ProjectType::OUTPUT);
    fst::RmEpsilon(&lattice);
    fst::Prune(&lattice, fst::LatticeWeight(beam, 0));
    fst::Lattice words;
    fst::Determinize(lattice, &words);
    fst::Prune(&words, fst::LatticeWeight(beam, 0));
    return LatticeText(words);
  }

 private:
  std::shared_ptr<Graph> graph_;  // the decoder holds a reference: keep the graph alive
  ChunkedDecodable decodable_;
  Decoder decoder_;
  bool finalized_ = false;
};

std::shared_ptr<Graph> ReadGraph(const std::string &path) {
  std::unique_ptr<Graph> graph(Graph::Read(path));
  if (!graph) throw std::runtime_error(path + ": not readable as an OpenFst vector FST");
  return std::shared_ptr<Graph>(std::move(graph));
}

std::shared_ptr<Graph> CompileGraph(const std::string &text) {
  std::istringstream in(text);
  fst::FstCompiler<fst::StdArc> compiler(in, "text", nullptr, nullptr, nullptr, false, false,
                                         false, false);
  return std::make_shared<Graph>(compiler.Fst());
}

}  // namespace

PYBIND11_MODULE(kaldi_lattice_faster, m) {
  m.doc() = "Kaldi's LatticeFasterDecoder (from kaldi-hmm-gmm) with tracebacks, best paths and word lattices";

  py::class_<Graph, std::shared_ptr<Graph>>(m, "Graph", "A decoding graph (OpenFst StdVectorFst)")
      .def_static("read", &ReadGraph, py::arg("path"), py::call_guard<py::gil_scoped_release>())
      .def_static("compile", &CompileGraph, py::arg("text"),
                  "From OpenFst's text form, as fstcompile reads it (numeric labels)")
      .def("write", [](const Graph &graph, const std::string &path) {
        if (!graph.Write(path)) throw std::runtime_error(path + ": cannot write");
      }, py::arg("path"))
      .def_property_readonly("num_states", [](const Graph &graph) { return graph.NumStates(); });

  py::class_<khg::LatticeFasterDecoderConfig>(m, "DecoderConfig")
      .def(py::init([](float beam, int32_t max_active, int32_t min_active, float lattice_beam,
                       int32_t prune_interval, float beam_delta) {
             khg::LatticeFasterDecoderConfig config;
             config.beam = beam;
             config.max_active = max_active;
             config.min_active = min_active;
             config.lattice_beam = lattice_beam;
             config.prune_interval = prune_interval;
             config.beam_delta = beam_delta;
             return config;
           }),
           py::arg("beam"), py::arg("max_active"), py::arg("min_active"), py::arg("lattice_beam"),
           py::arg("prune_interval") = 25, py::arg("beam_delta") = 0.5)
      .def("__str__", &khg::LatticeFasterDecoderConfig::ToString);

  py::class_<LatticeFasterDecoder>(m, "LatticeFasterDecoder")
      .def(py::init<std::shared_ptr<Graph>,
                    py::array_t<int32_t, py::array::c_style | py::array::forcecast>, int32_t,
                    const khg::LatticeFasterDecoderConfig &>(),
           py::arg("graph"), py::arg("tid_to_pdf"), py::arg("num_pdfs"), py::arg("config"))
      .def("advance", &LatticeFasterDecoder::Advance, py::arg("loglikes"))
      .def("finalize", &LatticeFasterDecoder::Finalize)
      .def_property_readonly("num_frames_decoded", &LatticeFasterDecoder::NumFramesDecoded)
      .def("traceback", &LatticeFasterDecoder::Traceback)
      .def("best_path", &LatticeFasterDecoder::BestPath, py::arg("use_final_probs"))
      .def("word_lattice", &LatticeFasterDecoder::WordLattice, py::arg("beam"));
}
