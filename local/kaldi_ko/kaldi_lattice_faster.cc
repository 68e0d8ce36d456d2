// kaldi_lattice_faster: Kaldi's LatticeFasterDecoder (the C++ of the kaldi-hmm-gmm package, a
// maintained port of Kaldi's decoder/lattice-faster-decoder.cc) opened to Python with what that
// package's own binding leaves out: decoding chunk by chunk, the online traceback Kaldi's
// silence weighting reads, the best path, the lattice's word sequences, and Vosk's lookahead
// graphs composed on the fly. Built by tools/build_kaldi_lattice_faster.sh against Debian's
// OpenFst; used by local/kaldi_ko/decoder.py.
//
//   graph = kaldi_lattice_faster.Graph.read_lookahead("model/graph/HCLr.fst",
//       "model/graph/Gr.fst", disambig_tids)   # or Graph.read("HCLG.fst"), a static graph
//   decoder = kaldi_lattice_faster.LatticeFasterDecoder(graph, tid_to_pdf, num_pdfs,
//       kaldi_lattice_faster.DecoderConfig(beam=10, max_active=3000, min_active=200,
//                                          lattice_beam=2))
//   decoder.advance(loglikes)                   # (frames, num_pdfs) float32, any number of times
//   decoder.traceback()                         # the cheapest token's path: transition-ids, tokens
//   decoder.best_path()                         # OpenFst text of a Kaldi Lattice
//   decoder.finalize(); decoder.word_lattice(beam=2)
//
// Lattices come back in OpenFst's text form, weights as "graph,acoustic" (Kaldi's
// LatticeWeight), the start state's lines first.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include <fst/extensions/ngram/ngram-fst.h>
#include <fst/matcher-fst.h>
#include <fst/script/compile-impl.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "kaldi-hmm-gmm/csrc/lattice-faster-decoder.h"

namespace py = pybind11;

namespace {

// The FST types of Vosk's lookahead graphs (HCLr.fst, Gr.fst), registered for Fst::Read as
// OpenFst's plugins olabel_lookahead-fst.so and ngram-fst.so register them.
const fst::FstRegisterer<fst::StdOLabelLookAheadFst> olabel_lookahead_registerer;
const fst::FstRegisterer<fst::NGramFst<fst::StdArc>> ngram_registerer;

// A decoding graph: a static FST (HCLG), or Vosk's lookahead pair composed on the fly as Vosk
// and Kaldi's nnet3-latgen-faster-lookahead compose it (Kaldi's LookaheadComposeFst: OpenFst's
// ComposeFst, which picks the label-lookahead filter for HCLr's olabel_lookahead matcher, its
// disambiguation transition-ids mapped to epsilon). A lazy composition numbers its states in
// the order the search reaches them, and the numbering orders the decoder's tokens (which
// marginal tokens get through while a frame's cutoff tightens): each search gets a fresh one,
// as each Vosk recognizer makes its own.
class Graph {
 public:
  explicit Graph(std::unique_ptr<fst::StdVectorFst> hclg) : hclg_(std::move(hclg)) {}
  Graph(std::unique_ptr<fst::StdFst> hclr, std::unique_ptr<fst::StdFst> gr,
        std::vector<int32_t> disambig)
      : hclr_(std::move(hclr)), gr_(std::move(gr)), disambig_(std::move(disambig)) {}

  bool is_lookahead() const { return hclg_ == nullptr; }

  // Word id -> word, from the output symbol table the graph was stored with (G's, for a
  // lookahead graph, where Vosk reads its words when the model has no words.txt); empty if none.
  std::map<int64_t, std::string> WordSymbols() const {
    std::map<int64_t, std::string> words;
    const fst::SymbolTable *symbols = hclg_ ? hclg_->OutputSymbols() : gr_->OutputSymbols();
    if (symbols == nullptr) return words;
    for (const auto &item : *symbols) words[item.Label()] = item.Symbol();
    return words;
  }
  const fst::StdVectorFst &hclg() const {
    if (!hclg_) throw std::logic_error("a lookahead graph has no static HCLG");
    return *hclg_;
  }

  // The FST one search reads (a static graph's is a shallow copy).
  std::unique_ptr<fst::StdFst> ForSearch() const {
    if (hclg_) return std::unique_ptr<fst::StdFst>(hclg_->Copy());
    fst::CacheOptions compose_cache(true, 1 << 25);  // Kaldi's LookaheadComposeFst's numbers
    fst::ArcMapFstOptions map_cache(fst::CacheOptions(true, 0));
    return std::make_unique<LookaheadFst>(fst::ComposeFst<fst::StdArc>(*hclr_, *gr_, compose_cache),
                                          Epsilons(disambig_), map_cache);
  }

 private:
  // Kaldi's RemoveSomeInputSymbolsMapper: the disambiguation transition-ids become epsilon.
  class Epsilons {
   public:
    explicit Epsilons(const std::vector<int32_t> &labels) : labels_(labels.begin(), labels.end()) {}
    fst::StdArc operator()(const fst::StdArc &arc) const {
      fst::StdArc mapped = arc;
      if (labels_.count(arc.ilabel)) mapped.ilabel = 0;
      return mapped;
    }
    fst::MapFinalAction FinalAction() const { return fst::MAP_NO_SUPERFINAL; }
    fst::MapSymbolsAction InputSymbolsAction() const { return fst::MAP_CLEAR_SYMBOLS; }
    fst::MapSymbolsAction OutputSymbolsAction() const { return fst::MAP_COPY_SYMBOLS; }
    uint64_t Properties(uint64_t props) const {
      return props & ~(fst::kAcceptor | fst::kNotAcceptor | fst::kIDeterministic |
                       fst::kNonIDeterministic | fst::kNoEpsilons | fst::kNoIEpsilons |
                       fst::kILabelSorted | fst::kNotILabelSorted);
    }

   private:
    std::unordered_set<int32_t> labels_;
  };
  using LookaheadFst = fst::ArcMapFst<fst::StdArc, fst::StdArc, Epsilons>;

  std::unique_ptr<fst::StdVectorFst> hclg_;
  std::unique_ptr<fst::StdFst> hclr_, gr_;
  std::vector<int32_t> disambig_;
};

using Token = khg::decoder::BackpointerToken;

// Tokens with backpointers, as Kaldi's LatticeFasterOnlineDecoder (and Vosk's incremental
// decoder) keep them, for Kaldi's BestPathEnd + TraceBackBestPath.
class Decoder : public khg::LatticeFasterDecoderTpl<fst::StdFst, Token> {
 public:
  using khg::LatticeFasterDecoderTpl<fst::StdFst, Token>::LatticeFasterDecoderTpl;

  // Per decoded frame, the transition-id of the arc that reached it and the token that arc left
  // from, from the cheapest token of the last frame (the first of equal ones, final weights
  // ignored: BestPathEnd(use_final_probs=false)) back along each token's best predecessor,
  // through the cheapest link to it (TraceBackBestPath). Kaldi's silence weighting compares
  // those tokens (by address) with the ones it stored, and stops where they agree.
  void Traceback(std::vector<int32_t> *transition_ids, std::vector<uint64_t> *tokens) const {
    transition_ids->clear();
    tokens->clear();
    if (NumFramesDecoded() == 0) return;
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
      if (ilabel != 0) {
        transition_ids->push_back(ilabel);
        tokens->push_back(reinterpret_cast<uintptr_t>(tok->backpointer));
      }
    }
    std::reverse(transition_ids->begin(), transition_ids->end());
    std::reverse(tokens->begin(), tokens->end());
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
        search_graph_(graph_->ForSearch()),
        decodable_(std::vector<int32_t>(tid_to_pdf.data(), tid_to_pdf.data() + tid_to_pdf.size()),
                   num_pdfs),
        decoder_(*search_graph_, config) {
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

  std::pair<py::array_t<int32_t>, py::array_t<uint64_t>> Traceback() const {
    std::vector<int32_t> transition_ids;
    std::vector<uint64_t> tokens;
    decoder_.Traceback(&transition_ids, &tokens);
    return {py::array_t<int32_t>(transition_ids.size(), transition_ids.data()),
            py::array_t<uint64_t>(tokens.size(), tokens.data())};
  }

  // The best path, final weights counted.
  std::string BestPath() const {
    fst::Lattice path;
    if (NumFramesDecoded() > 0) decoder_.GetBestPath(&path, true);
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
  std::shared_ptr<Graph> graph_;  // keeps the FSTs the search graph reads alive
  std::unique_ptr<fst::StdFst> search_graph_;
  ChunkedDecodable decodable_;
  Decoder decoder_;
  bool finalized_ = false;
};

std::shared_ptr<Graph> ReadGraph(const std::string &path) {
  std::unique_ptr<fst::StdVectorFst> hclg(fst::StdVectorFst::Read(path));
  if (!hclg) throw std::runtime_error(path + ": not readable as an OpenFst vector FST");
  return std::make_shared<Graph>(std::move(hclg));
}

std::unique_ptr<fst::StdFst> ReadFst(const std::string &path) {
  std::unique_ptr<fst::StdFst> read(fst::StdFst::Read(path));
  if (!read) throw std::runtime_error(path + ": not readable as an OpenFst FST");
  return read;
}

std::shared_ptr<Graph> ReadLookaheadGraph(const std::string &hclr, const std::string &gr,
                                          std::vector<int32_t> disambig) {
  return std::make_shared<Graph>(ReadFst(hclr), ReadFst(gr), std::move(disambig));
}

std::shared_ptr<Graph> CompileGraph(const std::string &text) {
  std::istringstream in(text);
  fst::FstCompiler<fst::StdArc> compiler(in, "text", nullptr, nullptr, nullptr, false, false,
                                         false, false);
  return std::make_shared<Graph>(std::make_unique<fst::StdVectorFst>(compiler.Fst()));
}

}  // namespace

PYBIND11_MODULE(kaldi_lattice_faster, m) {
  m.doc() = "Kaldi's LatticeFasterDecoder (from kaldi-hmm-gmm) with tracebacks, best paths and word lattices";

  py::class_<Graph, std::shared_ptr<Graph>>(
      m, "Graph", "A decoding graph: a static HCLG, or Vosk's HCLr and Gr composed on the fly")
      .def_static("read", &ReadGraph, py::arg("path"), py::call_guard<py::gil_scoped_release>(),
                  "A static graph (an OpenFst StdVectorFst file)")
      .def_static("read_lookahead", &ReadLookaheadGraph, py::arg("hclr"), py::arg("gr"),
                  py::arg("disambig"), py::call_guard<py::gil_scoped_release>(),
                  "Vosk's lookahead graph: HCLr.fst (olabel_lookahead), Gr.fst (ngram), and the "
                  "disambiguation transition-ids")
      .def_static("compile", &CompileGraph, py::arg("text"),
                  "From OpenFst's text form, as fstcompile reads it (numeric labels)")
      .def("write", [](const Graph &graph, const std::string &path) {
        if (!graph.hclg().Write(path)) throw std::runtime_error(path + ": cannot write");
      }, py::arg("path"))
      .def_property_readonly("is_lookahead", &Graph::is_lookahead)
      .def_property_readonly("word_symbols", &Graph::WordSymbols,
                             "word id -> word, from the symbol table stored with the graph (G's)")
      .def_property_readonly("num_states", [](const Graph &graph) { return graph.hclg().NumStates(); });

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
      .def("best_path", &LatticeFasterDecoder::BestPath)
      .def("word_lattice", &LatticeFasterDecoder::WordLattice, py::arg("beam"));
}
