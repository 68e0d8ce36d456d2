"""Tacotron 2 (Shen et al. 2018), sized to train on two CPU cores: phones and a speaker in, log
mel frames (:func:`speechtune.tts.features.log_mel`) out, ``reduction`` frames per decoder step::

    model = Tacotron2(TacotronConfig(num_phones=len(tokens), num_speakers=40))
    out = model(batch["phones"], batch["phone_lens"], batch["mels"], batch["mel_lens"], batch["speakers"])
    out.mel_post, out.target, out.stop_logits, out.alignments  # teacher-forced: what the loss reads
    model.set_speakers(41)                 # a new voice: row 40 starts as the mean of the others
    synthesis = model.infer(phones, speaker=40, max_frames=1000)
    synthesis.mel, synthesis.stopped       # (frames, 80) log mel for the vocoder; False: cut off

The parts: a phone encoder (convolutions, then a BiLSTM) whose outputs carry the speaker's
embedding; location-sensitive attention (Chorowski et al. 2015: the previous and the cumulative
attention weights, convolved, steer the next weights forward); an autoregressive decoder (prenet,
attention LSTM, decoder LSTM, a linear layer to ``reduction`` frames and as many stop logits);
a convolutional postnet that adds a residual to the frames.

Departures from the paper: no batch norm (batch statistics would make an utterance's output
depend on its batch-mates and their padding; every layer here is masked so that padding changes
nothing), no zoneout, and the frames are normalized per mel bin inside the model (``mel_mean``,
``mel_std``: buffers, so that a saved model de-normalizes what it synthesizes): the inputs and
what :meth:`~Tacotron2.infer` returns are plain log mel, the teacher-forced pass's frames are
normalized, as the loss compares them. The prenet's dropout stays on at inference, as in the
paper: the decoder learned from dropped-out previous frames to lean on attention rather than
copy the last frame, and inputs without dropout are ones it never saw.
"""
from dataclasses import dataclass, replace
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


@dataclass
class TacotronConfig:
    """Every size of the model: what rebuilds it from a checkpoint."""

    num_phones: int                  # phone ids 0..num_phones-1, 0 the padding
    num_speakers: int
    num_mels: int = 80
    reduction: int = 2               # frames per decoder step
    phone_dim: int = 128
    encoder_convs: int = 3
    encoder_kernel: int = 5
    encoder_dim: int = 128           # the BiLSTM's output, both directions together
    speaker_dim: int = 32
    attention_rnn_dim: int = 256
    decoder_rnn_dim: int = 256
    attention_dim: int = 128
    location_filters: int = 32
    location_kernel: int = 31
    prenet_dim: int = 128
    prenet_dropout: float = 0.5      # on in training and inference alike
    postnet_convs: int = 5
    postnet_dim: int = 128           # 256 (the paper's 512 halved) costs 15% more per step on a CPU
    postnet_kernel: int = 5
    dropout: float = 0.1             # encoder and postnet convolutions, training only

    @property
    def memory_dim(self) -> int:
        """What attention reads per phone: the encoder output and the speaker embedding."""
        return self.encoder_dim + self.speaker_dim


@dataclass
class TacotronOutput:
    """A teacher-forced pass. The frames are normalized log mel (``model.denormalize`` gives log
    mel), zero past each utterance's length."""

    mel: torch.Tensor           # (N, T', num_mels) before the postnet; T' = T rounded up to reduction
    mel_post: torch.Tensor      # (N, T', num_mels) after it
    target: torch.Tensor        # (N, T', num_mels) the input mels normalized and padded: what mel should be
    stop_logits: torch.Tensor   # (N, T')
    alignments: torch.Tensor    # (N, T' / reduction, L): attention weights per decoder step


@dataclass
class Synthesis:
    """What :meth:`Tacotron2.infer` made of one utterance."""

    mel: torch.Tensor           # (frames, num_mels) log mel, after the postnet
    alignment: torch.Tensor     # (steps, L)
    stopped: bool               # False: max_frames reached without the stop token


@dataclass
class DecoderState:
    """The recurrent state carried from one decoder step to the next."""

    attention_h: torch.Tensor
    attention_c: torch.Tensor
    decoder_h: torch.Tensor
    decoder_c: torch.Tensor
    weights: torch.Tensor       # (N, L): the previous step's attention
    cumulative: torch.Tensor    # (N, L): their sum over the steps so far
    context: torch.Tensor       # (N, memory_dim)


def length_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(N, max_len) bool: True at the positions before each length."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


class Encoder(nn.Module):
    """Phone ids to (N, L, encoder_dim): convolutions for context, a BiLSTM for the sequence."""

    def __init__(self, c: TacotronConfig) -> None:
        super().__init__()
        self.embedding = nn.Embedding(c.num_phones, c.phone_dim, padding_idx=0)
        self.convs = nn.ModuleList(nn.Conv1d(c.phone_dim, c.phone_dim, c.encoder_kernel, padding=c.encoder_kernel // 2)
                                   for _ in range(c.encoder_convs))
        self.dropout = nn.Dropout(c.dropout)
        self.lstm = nn.LSTM(c.phone_dim, c.encoder_dim // 2, batch_first=True, bidirectional=True)

    def forward(self, phones: torch.Tensor, phone_lens: torch.Tensor) -> torch.Tensor:
        # Zeroing the padding after every layer makes it look like the convolution's own zero
        # padding: the last phones see the same context in any batch.
        mask = length_mask(phone_lens, phones.shape[1])[:, None, :]
        x = self.embedding(phones).transpose(1, 2) * mask
        for conv in self.convs:
            x = self.dropout(torch.relu(conv(x))) * mask
        packed = pack_padded_sequence(x.transpose(1, 2), phone_lens.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        return pad_packed_sequence(out, batch_first=True, total_length=phones.shape[1])[0]


class LocationSensitiveAttention(nn.Module):
    """Additive attention whose energies also see the previous and cumulative weights through a
    convolution: the weights learn to move forward from where they were, never to jump back."""

    def __init__(self, c: TacotronConfig) -> None:
        super().__init__()
        self.query = nn.Linear(c.attention_rnn_dim, c.attention_dim, bias=False)
        self.memory = nn.Linear(c.memory_dim, c.attention_dim, bias=False)
        self.location_conv = nn.Conv1d(2, c.location_filters, c.location_kernel, padding=c.location_kernel // 2,
                                       bias=False)
        self.location = nn.Linear(c.location_filters, c.attention_dim, bias=False)
        self.energy = nn.Linear(c.attention_dim, 1, bias=False)

    def forward(self, query: torch.Tensor, memory: torch.Tensor, processed_memory: torch.Tensor,
                state: DecoderState, mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The context (N, memory_dim) and weights (N, L); ``processed_memory`` is
        ``self.memory(memory)``, computed once per utterance."""
        locations = self.location_conv(torch.stack([state.weights, state.cumulative], dim=1)).transpose(1, 2)
        energies = self.energy(torch.tanh(self.query(query)[:, None, :] + processed_memory
                                          + self.location(locations))).squeeze(-1)
        weights = torch.softmax(energies.masked_fill(~mask, float("-inf")), dim=1)
        return torch.bmm(weights[:, None, :], memory).squeeze(1), weights


class Decoder(nn.Module):
    """One step: the previous frame through the prenet, the attention LSTM, attention, the
    decoder LSTM, then ``reduction`` frames and their stop logits."""

    def __init__(self, c: TacotronConfig) -> None:
        super().__init__()
        self.config = c
        self.prenet = nn.ModuleList([nn.Linear(c.num_mels, c.prenet_dim), nn.Linear(c.prenet_dim, c.prenet_dim)])
        self.attention_rnn = nn.LSTMCell(c.prenet_dim + c.memory_dim, c.attention_rnn_dim)
        self.attention = LocationSensitiveAttention(c)
        self.decoder_rnn = nn.LSTMCell(c.attention_rnn_dim + c.memory_dim, c.decoder_rnn_dim)
        self.frames = nn.Linear(c.decoder_rnn_dim + c.memory_dim, c.reduction * c.num_mels)
        self.stop = nn.Linear(c.decoder_rnn_dim + c.memory_dim, c.reduction)

    def run_prenet(self, frames: torch.Tensor) -> torch.Tensor:
        for layer in self.prenet:
            frames = F.dropout(torch.relu(layer(frames)), self.config.prenet_dropout, training=True)
        return frames

    def initial_state(self, memory: torch.Tensor) -> DecoderState:
        n, length, _ = memory.shape
        c = self.config
        zeros = memory.new_zeros
        return DecoderState(zeros(n, c.attention_rnn_dim), zeros(n, c.attention_rnn_dim), zeros(n, c.decoder_rnn_dim),
                            zeros(n, c.decoder_rnn_dim), zeros(n, length), zeros(n, length), zeros(n, c.memory_dim))

    def step(self, prenet_out: torch.Tensor, state: DecoderState, memory: torch.Tensor,
             processed_memory: torch.Tensor, mask: torch.Tensor
             ) -> Tuple[torch.Tensor, torch.Tensor, DecoderState]:
        """Frames (N, reduction * num_mels), stop logits (N, reduction) and the next state."""
        attention_h, attention_c = self.attention_rnn(torch.cat([prenet_out, state.context], -1),
                                                      (state.attention_h, state.attention_c))
        context, weights = self.attention(attention_h, memory, processed_memory, state, mask)
        decoder_h, decoder_c = self.decoder_rnn(torch.cat([attention_h, context], -1),
                                                (state.decoder_h, state.decoder_c))
        out = torch.cat([decoder_h, context], -1)
        next_state = DecoderState(attention_h, attention_c, decoder_h, decoder_c, weights,
                                  state.cumulative + weights, context)
        return self.frames(out), self.stop(out), next_state


class Postnet(nn.Module):
    """Convolutions over the whole utterance's frames: a residual that sharpens them."""

    def __init__(self, c: TacotronConfig) -> None:
        super().__init__()
        dims = [c.num_mels] + [c.postnet_dim] * (c.postnet_convs - 1) + [c.num_mels]
        self.convs = nn.ModuleList(nn.Conv1d(d_in, d_out, c.postnet_kernel, padding=c.postnet_kernel // 2)
                                   for d_in, d_out in zip(dims[:-1], dims[1:]))
        self.dropout = nn.Dropout(c.dropout)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(N, T, num_mels) normalized frames, zero where ``mask`` (N, T) is False -> the residual."""
        mask = mask[:, None, :]
        x = frames.transpose(1, 2)
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < len(self.convs) - 1:
                x = self.dropout(torch.tanh(x))
            x = x * mask
        return x.transpose(1, 2)


class Tacotron2(nn.Module):
    """Phones and a speaker to log mel frames (module docstring)."""

    def __init__(self, config: TacotronConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.speaker_embedding = nn.Embedding(config.num_speakers, config.speaker_dim)
        self.decoder = Decoder(config)
        self.postnet = Postnet(config)
        self.register_buffer("mel_mean", torch.zeros(config.num_mels))
        self.register_buffer("mel_std", torch.ones(config.num_mels))

    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """The per-bin mean and standard deviation of the training frames (log mel)."""
        self.mel_mean.copy_(mean)
        self.mel_std.copy_(std)

    def normalize(self, mels: torch.Tensor) -> torch.Tensor:
        return (mels - self.mel_mean) / self.mel_std

    def denormalize(self, frames: torch.Tensor) -> torch.Tensor:
        return frames * self.mel_std + self.mel_mean

    def set_speakers(self, num_speakers: int) -> None:
        """Resize the speaker table to ``num_speakers`` rows: the existing rows kept, new ones
        started at their mean (an average voice is a better start for a new one than noise)."""
        old = self.speaker_embedding.weight.data
        table = nn.Embedding(num_speakers, self.config.speaker_dim).to(old.device)
        kept = min(num_speakers, old.shape[0])
        with torch.no_grad():
            table.weight[:kept] = old[:kept]
            table.weight[kept:] = old.mean(dim=0)
        self.speaker_embedding = table
        self.config = replace(self.config, num_speakers=num_speakers)

    def encode(self, phones: torch.Tensor, phone_lens: torch.Tensor, speakers: torch.Tensor) -> torch.Tensor:
        """(N, L, memory_dim): the encoder's outputs with each utterance's speaker appended."""
        encoded = self.encoder(phones, phone_lens)
        speaker = self.speaker_embedding(speakers)[:, None, :].expand(-1, phones.shape[1], -1)
        return torch.cat([encoded, speaker], dim=-1)

    def forward(self, phones: torch.Tensor, phone_lens: torch.Tensor, mels: torch.Tensor, mel_lens: torch.Tensor,
                speakers: torch.Tensor) -> TacotronOutput:
        """Teacher forcing: step ``s`` is fed the last true frame of step ``s - 1``.

        phones (N, L) long, 0-padded; phone_lens (N,); mels (N, T, num_mels) log mel; mel_lens
        (N,); speakers (N,). The mels are padded inside to T' (a multiple of ``reduction``).
        """
        r, num_mels = self.config.reduction, self.config.num_mels
        n, frames = mels.shape[:2]
        steps = -(-frames // r)
        targets = F.pad(self.normalize(mels), (0, 0, 0, steps * r - frames))
        # The go frame is all zeros: the mean frame, once normalized.
        previous = torch.cat([targets.new_zeros(n, 1, num_mels), targets[:, r - 1:-1:r]], dim=1)
        prenet_out = self.decoder.run_prenet(previous)

        memory = self.encode(phones, phone_lens, speakers)
        processed_memory = self.decoder.attention.memory(memory)
        phone_mask = length_mask(phone_lens, phones.shape[1])
        state = self.decoder.initial_state(memory)
        outputs, stops, alignments = [], [], []
        for s in range(steps):
            out, stop, state = self.decoder.step(prenet_out[:, s], state, memory, processed_memory, phone_mask)
            outputs.append(out)
            stops.append(stop)
            alignments.append(state.weights)

        frame_mask = length_mask(mel_lens, steps * r)
        mel = torch.stack(outputs, dim=1).view(n, steps * r, num_mels) * frame_mask[:, :, None]
        mel_post = mel + self.postnet(mel, frame_mask)
        return TacotronOutput(mel, mel_post, targets * frame_mask[:, :, None],
                              torch.stack(stops, dim=1).view(n, steps * r), torch.stack(alignments, dim=1))

    @torch.no_grad()
    def infer(self, phones: torch.Tensor, speaker: int, max_frames: int) -> Synthesis:
        """Greedy synthesis of one utterance (phones (L,) long): each step fed the last frame it
        made, until a stop probability exceeds 0.5 (that frame is the last) or ``max_frames``."""
        was_training = self.training
        self.eval()
        r = self.config.reduction
        phones = phones[None, :]
        memory = self.encode(phones, torch.tensor([phones.shape[1]]), torch.tensor([speaker]))
        processed_memory = self.decoder.attention.memory(memory)
        phone_mask = torch.ones_like(phones, dtype=torch.bool)
        state = self.decoder.initial_state(memory)
        previous = memory.new_zeros(1, self.config.num_mels)
        outputs, alignments, stopped = [], [], False
        for _ in range(-(-max_frames // r)):
            out, stop, state = self.decoder.step(self.decoder.run_prenet(previous), state, memory, processed_memory,
                                                 phone_mask)
            out = out.view(r, self.config.num_mels)
            alignments.append(state.weights[0])
            above = (torch.sigmoid(stop[0]) > 0.5).nonzero()
            if len(above):
                outputs.append(out[:int(above[0]) + 1])
                stopped = True
                break
            outputs.append(out)
            previous = out[-1:]
        mel = torch.cat(outputs)[:max_frames]
        mel_post = mel + self.postnet(mel[None], torch.ones(1, len(mel), dtype=torch.bool))[0]
        self.train(was_training)
        return Synthesis(self.denormalize(mel_post), torch.stack(alignments), stopped)
