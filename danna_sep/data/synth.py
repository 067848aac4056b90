"""Built-in synthetic multitrack dataset: procedural songs rendered with a General-MIDI SoundFont.

MUSDB18 cannot be downloaded here, so the project trains and evaluates out of the box on songs it composes
itself (the same recipe as Slakh2100, at a smaller scale)::

    compose(rng, seconds) → Song            tempo, key, chord progression, sections, four stems of MIDI-like parts
    render(song) → (4, 2, samples) float32  each stem alone through tinysoundfont, stereo 44.1 kHz, + shared room
    make_synthetic_dataset(root, ...)       root/{train,valid,test}/<name>/{mixture,drums,bass,other,vocals}.wav

Stems: drums = a GM drum kit playing a groove with fills and crashes; bass = a bass program playing a line from
the chord roots; other = 1–3 parts (pads, comping, arpeggios, an instrumental counter-melody) from pianos,
organs, guitars, strings, pads, mallets, brass; vocals = a phrased melody (with vibrato, sometimes a harmony
voice) on a voice-like program (choir aahs, voice oohs, synth/solo vox) or a solo wind. Programs, pan, levels
(whole-stem RMS drawn around −24…−17 dBFS, like real MUSDB stems), tempo, density and which stems play in which
section are random, so stems fall silent for stretches as in real songs.

``mixture.wav`` is exactly Σ stems: with ``subtype="FLOAT"`` the float32 sum is written as is; with
``subtype="PCM_16"`` the stems are quantised first and the mixture is their integer sum (headroom guarantees no
overflow), so reading all five files back as float32 gives mixture == Σ stems bit for bit.

Everything is a function of ``seed`` (and :data:`SYNTH_VERSION`): track ``i`` of a split is composed from
``SeedSequence([seed, split id, i])``, so adding valid/test tracks does not change the train tracks.
The default SoundFont is ``TimGM6mb.sf2`` from the pretty_midi wheel (GPL-2: rendered audio is a build product,
never committed).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from .. import SAMPLE_RATE, SOURCES
from ..errors import DatasetError

SYNTH_VERSION = 1
"""Bumped whenever composition or rendering changes what a seed produces."""

SPLIT_IDS = {"train": 0, "valid": 1, "test": 2}
MANIFEST = "synth.json"

# GM programs (0-based) per role
BASS_PROGRAMS = (32, 33, 34, 35, 36, 37, 38, 39)
PAD_PROGRAMS = (16, 19, 48, 49, 50, 51, 88, 89, 90, 94, 95)
COMP_PROGRAMS = (0, 1, 2, 4, 5, 7, 16, 17, 18, 24, 25, 26, 27, 28, 29, 30, 61, 62)
ARP_PROGRAMS = (0, 6, 8, 10, 11, 12, 24, 25, 45, 46, 80, 81, 108)
LEAD_PROGRAMS = (27, 29, 30, 40, 56, 61, 80, 81, 84, 22)  # instrumental counter-melodies/solos belong to "other"
VOICE_PROGRAMS = (52, 53, 54, 85)
WIND_PROGRAMS = (56, 64, 65, 66, 68, 71, 73)
DRUM_KITS = (0, 8, 16, 24, 25, 32, 40, 48)  # bank 128 presets of TimGM6mb (standard, room, power, electronic, …)

SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
PROGRESSIONS = {  # scale degrees, 0-based
    "major": (
        (0, 4, 5, 3),
        (0, 5, 3, 4),
        (5, 3, 0, 4),
        (0, 3, 4, 3),
        (1, 4, 0, 0),
        (0, 2, 3, 4),
        (3, 0, 4, 5),
        (0, 3, 0, 4),
    ),
    "minor": ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 3, 5, 4), (0, 5, 3, 4), (0, 0, 3, 4)),
}

# GM drum keys
KICK, SNARE, RIM, CLAP, HAT, PEDAL_HAT, OPEN_HAT, CRASH, RIDE = 36, 38, 37, 39, 42, 44, 46, 49, 51
TOMS = (50, 48, 47, 45, 43, 41)
# drum grooves on a 16th grid of one 4/4 bar: instrument → steps
GROOVES = {
    "rock": {KICK: (0, 8, 10), SNARE: (4, 12), HAT: tuple(range(0, 16, 2))},
    "four_floor": {KICK: (0, 4, 8, 12), CLAP: (4, 12), OPEN_HAT: (2, 6, 10, 14), HAT: tuple(range(16))},
    "halftime": {KICK: (0, 7, 10), SNARE: (8,), HAT: tuple(range(0, 16, 2))},
    "funk": {KICK: (0, 3, 10), SNARE: (4, 12), HAT: tuple(range(16))},
    "bossa": {KICK: (0, 3, 4, 7, 8, 11, 12, 15), RIM: (0, 3, 6, 10, 13), HAT: tuple(range(0, 16, 2))},
    "ride": {KICK: (0, 10), SNARE: (4, 12), RIDE: (0, 4, 6, 8, 12, 14), PEDAL_HAT: (4, 12)},
}
GHOSTS = {"funk": (7, 9, 15), "rock": (), "four_floor": (), "halftime": (14,), "bossa": (), "ride": (11,)}


@dataclass
class Note:
    time: float  # seconds
    duration: float  # seconds
    pitch: int  # MIDI key
    velocity: int  # 1..127


@dataclass
class Part:
    role: str
    program: int
    pan: int  # MIDI CC10, 0 = left, 64 = centre, 127 = right
    notes: list[Note] = field(default_factory=list)
    drum: bool = False
    vibrato: tuple[float, float] | None = None  # (depth in cents, rate in Hz)


@dataclass
class Song:
    name: str
    tempo: float
    key: int
    mode: str
    seconds: float
    stems: dict[str, list[Part]]
    levels_db: dict[str, float]  # whole-stem RMS target, dBFS
    crest_db: dict[str, float]  # peak-to-RMS ceiling of each stem (its limiter threshold), dB
    reverb: dict[str, float]  # t60 (s), predelay (s), damping, and one send per stem

    def describe(self) -> dict:
        """A JSON-able summary (for the manifest)."""
        return {
            "name": self.name,
            "tempo": round(self.tempo, 2),
            "key": self.key,
            "mode": self.mode,
            "programs": {
                s: [("drums" if p.drum else "") + str(p.program) for p in parts] for s, parts in self.stems.items()
            },
            "roles": {s: [p.role for p in parts] for s, parts in self.stems.items()},
            "notes": {s: sum(len(p.notes) for p in parts) for s, parts in self.stems.items()},
            "levels_db": {s: round(v, 2) for s, v in self.levels_db.items()},
        }


# ---------------------------------------------------------------------------------------------------------------
# composition


class _Harmony:
    """Key, mode and the chord at any beat."""

    def __init__(self, rng: np.random.Generator, key: int, mode: str, bars: int, beats_per_bar: int) -> None:
        self.key, self.mode, self.scale = key, mode, SCALES[mode]
        progression = PROGRESSIONS[mode][rng.integers(len(PROGRESSIONS[mode]))]
        per_chord = beats_per_bar * float(rng.choice([0.5, 1.0, 1.0, 2.0]))  # harmonic rhythm
        sevenths = rng.random() < 0.35
        raise_v = mode == "minor" and rng.random() < 0.6  # harmonic-minor dominant
        self.chords: list[tuple[float, tuple[int, ...]]] = []  # (start beat, pitch classes, root first)
        beat, k = 0.0, 0
        while beat < bars * beats_per_bar:
            degree = progression[k % len(progression)]
            tones = [self.scale[(degree + 2 * i) % 7] for i in range(4 if sevenths else 3)]
            if raise_v and degree == 4:
                tones[1] = (tones[1] + 1) % 12
            self.chords.append((beat, tuple((self.key + t) % 12 for t in tones)))
            beat += per_chord
            k += 1

    def chord_at(self, beat: float) -> tuple[int, ...]:
        current = self.chords[0][1]
        for start, tones in self.chords:
            if start > beat + 1e-9:
                break
            current = tones
        return current

    def chord_spans(self, start: float, end: float) -> list[tuple[float, float, tuple[int, ...]]]:
        """(start beat, end beat, chord) of every chord overlapping [start, end)."""
        spans = []
        for i, (b, tones) in enumerate(self.chords):
            e = self.chords[i + 1][0] if i + 1 < len(self.chords) else math.inf
            if e > start and b < end:
                spans.append((max(b, start), min(e, end), tones))
        return spans

    def scale_pitches(self, low: int, high: int) -> list[int]:
        pcs = {(self.key + s) % 12 for s in self.scale}
        return [p for p in range(low, high + 1) if p % 12 in pcs]


def _nearest(pitches: Sequence[int], target: float) -> int:
    return min(pitches, key=lambda p: abs(p - target))


def _in_range(pc: int, low: int, high: int, target: float) -> int:
    return _nearest([p for p in range(low, high + 1) if p % 12 == pc], target)


class _Composer:
    """Writes the four stems of one song into time-stamped notes."""

    def __init__(self, rng: np.random.Generator, seconds: float) -> None:
        self.rng = rng
        self.seconds = seconds
        self.tempo = float(rng.uniform(76, 160))
        self.beats_per_bar = 3 if rng.random() < 0.1 else 4
        self.beat = 60.0 / self.tempo
        self.bars = max(1, math.ceil(seconds / (self.beat * self.beats_per_bar)))
        self.full_bars = max(1, int(seconds / (self.beat * self.beats_per_bar)))  # bars heard to their end
        mode = "major" if rng.random() < 0.6 else "minor"
        self.harmony = _Harmony(rng, int(rng.integers(12)), mode, self.bars, self.beats_per_bar)
        self.swing = float(rng.choice([0.0, 0.0, 0.0, 0.12]))  # delay of off-beat 8ths, in beats
        self.sections = self._sections()

    # -- form ---------------------------------------------------------------------------------------------------
    def _sections(self) -> list[dict[str, Any]]:
        """Sections of 4 or 8 bars, each with the stems that play in it and an energy level."""
        rng, bar = self.rng, 0
        sections: list[dict[str, Any]] = []  # {"start", "end": bar, "energy": float, "active": {stem: bool}}
        while bar < self.bars:
            length = int(rng.choice([4, 8]))
            sections.append({"start": bar, "end": min(bar + length, self.bars), "energy": float(rng.uniform(0.4, 1.0))})
            bar += length
        if len(sections) == 1:  # a short excerpt: everything plays, like most 6-s chunks of a real song
            sections[0]["active"] = dict.fromkeys(SOURCES, True)
            return sections
        for i, sec in enumerate(sections):
            intro = i == 0
            sec["active"] = {
                "drums": rng.random() < (0.5 if intro else 0.9),
                "bass": rng.random() < (0.6 if intro else 0.92),
                "other": True,
                "vocals": rng.random() < (0.3 if intro else 0.75),
            }
        # every stem plays in at least 40 % of the song's bars (sections past the end do not count)
        heard = [min(sec["end"], self.full_bars) - min(sec["start"], self.full_bars) for sec in sections]
        for stem in SOURCES:
            order = [int(i) for i in rng.permutation(len(sections)) if heard[i] > 0]
            while (
                sum(h for h, sec in zip(heard, sections, strict=True) if sec["active"][stem]) < 0.4 * sum(heard)
                and order
            ):
                sections[order.pop()]["active"][stem] = True
        return sections

    def _active_bars(self, stem: str) -> list[tuple[int, dict]]:
        return [(b, s) for s in self.sections if s["active"][stem] for b in range(s["start"], s["end"])]

    # -- time -------------------------------------------------------------------------------------------------
    def _time(self, beat: float) -> float:
        """Beat → seconds, with swing on off-beat 8ths and a little human timing jitter."""
        if self.swing and abs((beat % 1.0) - 0.5) < 1e-6:
            beat += self.swing
        return max(0.0, beat * self.beat + float(self.rng.normal(0, 0.004)))

    def _note(self, beat: float, beats: float, pitch: int, velocity: float) -> Note:
        v = int(np.clip(velocity + self.rng.normal(0, 6), 20, 127))
        return Note(self._time(beat), max(0.05, beats * self.beat), int(pitch), v)

    # -- stems --------------------------------------------------------------------------------------------------
    def drums(self) -> list[Part]:
        rng, bpb = self.rng, self.beats_per_bar
        name = str(rng.choice(list(GROOVES)))
        groove = GROOVES[name]
        kit = int(rng.choice(DRUM_KITS))
        part = Part("kit:" + name, kit, int(rng.integers(56, 73)), drum=True)
        steps_per_bar = 4 * bpb
        for bar, sec in self._active_bars("drums"):
            base = bar * bpb
            last_of_section = bar == sec["end"] - 1 and sec["end"] - sec["start"] >= 2
            sparse = sec["energy"] < 0.55
            for inst, steps in groove.items():
                for step in steps:
                    if step >= steps_per_bar or (last_of_section and step >= steps_per_bar - 4):
                        continue
                    if inst in (HAT, RIDE) and sparse and step % 4:
                        continue  # low energy: quarter-note time keeping only
                    if inst == KICK and step not in (0, 8) and rng.random() < 0.25:
                        continue
                    accent = 1.0 if step % 4 == 0 else 0.8
                    vel = 110 * accent * (0.75 + 0.25 * sec["energy"])
                    part.notes.append(self._note(base + step / 4, 0.25, inst, vel))
            for step in GHOSTS[name]:
                if step < steps_per_bar and rng.random() < 0.7:
                    part.notes.append(self._note(base + step / 4, 0.25, SNARE, 38))
            if bar == sec["start"] and (bar > 0 or rng.random() < 0.5):
                part.notes.append(self._note(base, 1.0, CRASH, 112))
            if last_of_section:
                self._fill(part, base + bpb - 1)
        return [part]

    def _fill(self, part: Part, beat: float) -> None:
        """One beat of 16th notes over snare and toms, rising in velocity."""
        toms = [*list(self.rng.permutation(TOMS)[:3]), SNARE]
        for k in range(4):
            inst = int(self.rng.choice(toms))
            part.notes.append(self._note(beat + k / 4, 0.25, inst, 80 + 10 * k))

    def bass(self) -> list[Part]:
        rng, h, bpb = self.rng, self.harmony, self.beats_per_bar
        style = str(rng.choice(["whole", "eighths", "root_fifth", "syncopated", "walking"]))
        part = Part("bass:" + style, int(rng.choice(BASS_PROGRAMS)), int(rng.integers(58, 71)))
        low, high = 28, 50
        prev = 40.0
        for bar, sec in self._active_bars("bass"):
            for b0, b1, chord in h.chord_spans(bar * bpb, (bar + 1) * bpb):
                root = _in_range(chord[0], low, high - 7, prev)
                fifth = _in_range(chord[2], low, high, root + 7)
                vel = 92 + 15 * sec["energy"]
                span = b1 - b0
                if style == "whole":
                    onsets = [(b0, span * 0.95, root)]
                elif style == "eighths":
                    onsets = [(b, 0.45, root) for b in np.arange(b0, b1 - 1e-9, 0.5)]
                elif style == "root_fifth":
                    onsets = [(b, 0.9, root if int(b - b0) % 2 == 0 else fifth) for b in np.arange(b0, b1 - 1e-9, 1.0)]
                elif style == "syncopated":
                    pattern = (0.0, 0.75, 1.5, 2.5, 3.0)
                    onsets = [
                        (b0 + o, 0.6, root if i % 2 == 0 else fifth) for i, o in enumerate(pattern) if b0 + o < b1
                    ]
                else:  # walking: chord tones and scale steps, one per beat
                    scale = h.scale_pitches(low, high)
                    onsets, p = [], root
                    for b in np.arange(b0, b1 - 1e-9, 1.0):
                        onsets.append((b, 0.9, p))
                        p = int(np.clip(_nearest(scale, p + rng.choice([-2, -1, 1, 2, 3])), low, high))
                for b, beats, pitch in onsets:
                    part.notes.append(self._note(b, beats, pitch, vel))
                prev = root
        return [part]

    def other(self) -> list[Part]:
        rng = self.rng
        count = int(rng.choice([1, 2, 2, 3]))
        roles = ["pad", "comp", "arp"]
        chosen = list(rng.choice(roles, size=min(count, 3), replace=False))
        parts = []
        pans = rng.permutation([24, 44, 84, 104])
        for i, role in enumerate(chosen):
            parts.append(getattr(self, "_" + role)(int(pans[i % 4] + rng.integers(-10, 11))))
        # an instrumental counter-melody where the vocals rest, sometimes
        if rng.random() < 0.4:
            bars = [b for b, s in self._active_bars("other") if not s["active"]["vocals"]]
            if bars:
                lead = Part("lead", int(rng.choice(LEAD_PROGRAMS)), int(rng.integers(40, 89)))
                self._melody(lead, bars, 62, 84, rest_p=0.2)
                parts.append(lead)
        return parts

    def _voicing(self, chord: Sequence[int], center: float) -> list[int]:
        """Chord tones stacked within an octave and a half around ``center`` (smooth voice leading)."""
        voicing = [_in_range(pc, 48, 84, center) for pc in chord]
        return sorted(set(voicing))

    def _pad(self, pan: int) -> Part:
        part = Part("pad", int(self.rng.choice(PAD_PROGRAMS)), pan)
        center = float(self.rng.uniform(58, 68))
        for bar, sec in self._active_bars("other"):
            for b0, b1, chord in self.harmony.chord_spans(bar * self.beats_per_bar, (bar + 1) * self.beats_per_bar):
                for pitch in self._voicing(chord, center):
                    part.notes.append(self._note(b0, (b1 - b0) * 0.98, pitch, 70 + 20 * sec["energy"]))
        return part

    def _comp(self, pan: int) -> Part:
        rng = self.rng
        rhythm = [(0.0, 0.9), (1.0, 0.9), (2.0, 0.9), (3.0, 0.9)]
        rhythm = [
            rhythm,
            [(0.0, 1.4), (1.5, 0.4), (2.5, 1.2)],
            [(0.5, 0.3), (1.5, 0.3), (2.5, 0.3), (3.5, 0.3)],
            [(b / 2, 0.4) for b in range(8)],
        ][int(rng.integers(4))]
        part = Part("comp", int(rng.choice(COMP_PROGRAMS)), pan)
        center = float(rng.uniform(60, 70))
        for bar, sec in self._active_bars("other"):
            base = bar * self.beats_per_bar
            for onset, beats in rhythm:
                if onset >= self.beats_per_bar:
                    continue
                for pitch in self._voicing(self.harmony.chord_at(base + onset), center):
                    part.notes.append(self._note(base + onset, beats, pitch, 72 + 25 * sec["energy"]))
        return part

    def _arp(self, pan: int) -> Part:
        rng = self.rng
        step = float(rng.choice([0.25, 0.5]))
        part = Part("arp", int(rng.choice(ARP_PROGRAMS)), pan)
        center = float(rng.uniform(62, 72))
        shape = str(rng.choice(["up", "down", "updown"]))
        for bar, sec in self._active_bars("other"):
            base = bar * self.beats_per_bar
            for k, beat in enumerate(np.arange(base, base + self.beats_per_bar - 1e-9, step)):
                tones = self._voicing(self.harmony.chord_at(beat), center)
                tones = tones + [t + 12 for t in tones]
                seq = {"up": tones, "down": tones[::-1], "updown": tones + tones[-2:0:-1]}[shape]
                part.notes.append(self._note(beat, step * 0.9, seq[k % len(seq)], 68 + 25 * sec["energy"]))
        return part

    def vocals(self) -> list[Part]:
        rng = self.rng
        program = int(rng.choice(VOICE_PROGRAMS)) if rng.random() < 0.65 else int(rng.choice(WIND_PROGRAMS))
        vibrato = (float(rng.uniform(12, 40)), float(rng.uniform(4.5, 6.5))) if rng.random() < 0.8 else None
        center = int(rng.integers(60, 71))
        lead = Part("lead", program, int(rng.integers(56, 73)), vibrato=vibrato)
        bars = [b for b, _ in self._active_bars("vocals")]
        self._melody(lead, bars, center - 7, center + 9, rest_p=0.12)
        parts = [lead]
        if rng.random() < 0.3 and lead.notes:  # a harmony voice a diatonic third below, in some bars
            scale = self.harmony.scale_pitches(36, 96)
            second = Part("harmony", program, int(np.clip(lead.pan + rng.choice([-30, 30]), 0, 127)), vibrato=vibrato)
            for n in lead.notes:
                if rng.random() < 0.8:
                    below = [p for p in scale if p < n.pitch]
                    pitch = below[-2] if len(below) >= 2 else n.pitch - 4
                    second.notes.append(Note(n.time, n.duration, pitch, max(20, n.velocity - 15)))
            parts.append(second)
        return parts

    def _melody(self, part: Part, bars: Sequence[int], low: int, high: int, rest_p: float) -> None:
        """Phrases of 1–2 bars over ``bars``: scale steps, chord tones on strong beats, rests between phrases."""
        rng, h, bpb = self.rng, self.harmony, self.beats_per_bar
        scale = h.scale_pitches(low, high)
        durations = np.array([0.25, 0.5, 1.0, 1.5, 2.0])
        weights = np.array([0.06, 0.36, 0.34, 0.1, 0.14])
        bar_set = set(bars)
        pitch = _nearest(scale, (low + high) / 2)
        beat = float(bars[0] * bpb) if bars else 0.0
        end = (max(bars) + 1) * bpb if bars else 0
        while beat < end:
            if int(beat // bpb) not in bar_set:
                beat = float((int(beat // bpb) + 1) * bpb)
                continue
            phrase_end = min(beat + bpb * int(rng.choice([1, 2])), end)
            while beat < phrase_end - 1e-9:
                dur = float(min(rng.choice(durations, p=weights), phrase_end - beat))
                if rng.random() < rest_p:
                    beat += dur
                    continue
                pitch = _nearest(scale, pitch + int(rng.choice([-2, -1, -1, 0, 1, 1, 2, 3, -3, 5, -4])) * 1.7)
                if abs(beat - round(beat)) < 1e-9:  # strong beat: land on a chord tone
                    chord = h.chord_at(beat)
                    pitch = _nearest([p for p in range(low, high + 1) if p % 12 in chord] or scale, pitch)
                phrase_pos = (phrase_end - beat) / (2 * bpb)
                part.notes.append(self._note(beat, dur * 0.95, pitch, 88 + 18 * math.sin(math.pi * phrase_pos)))
                beat += dur
            beat += float(rng.choice([0.5, 1.0, 2.0, 3.0]))  # breath between phrases

    def song(self, name: str) -> Song:
        stems = {"drums": self.drums(), "bass": self.bass(), "other": self.other(), "vocals": self.vocals()}
        for parts in stems.values():  # notes past the end cannot sound
            for p in parts:
                p.notes = [n for n in p.notes if n.time < self.seconds]
        rng = self.rng
        levels = {s: float(rng.uniform(-24, -18)) for s in SOURCES}
        levels["vocals"] = float(rng.uniform(-23, -17))
        crest = {s: float(rng.uniform(11, 16)) for s in SOURCES}
        reverb = {
            "t60": float(rng.uniform(0.3, 1.6)),
            "predelay": float(rng.uniform(0.005, 0.03)),
            "damping": float(rng.uniform(0.2, 0.7)),
            "drums": float(rng.uniform(0.0, 0.15)),
            "bass": float(rng.uniform(0.0, 0.05)),
            "other": float(rng.uniform(0.05, 0.3)),
            "vocals": float(rng.uniform(0.1, 0.35)),
        }
        return Song(name, self.tempo, self.harmony.key, self.harmony.mode, self.seconds, stems, levels, crest, reverb)


def compose(rng: np.random.Generator, seconds: float, name: str = "song") -> Song:
    """A random song of ``seconds`` seconds (all four stems have notes)."""
    return _Composer(rng, seconds).song(name)


# ---------------------------------------------------------------------------------------------------------------
# rendering

_SYNTHS: dict[str, tuple[object, int]] = {}


def default_soundfont() -> Path:
    """``TimGM6mb.sf2`` shipped inside the pretty_midi wheel."""
    try:
        import pretty_midi
    except ImportError:
        raise DatasetError("the synthetic dataset needs pretty_midi (its wheel ships the GM SoundFont)") from None
    path = Path(pretty_midi.__file__).with_name("TimGM6mb.sf2")
    if not path.is_file():
        raise DatasetError(f"GM SoundFont not found at {path}; pass soundfont=PATH")
    return path


def _synth(soundfont: Path):
    """One synthesizer per SoundFont per process (loading is the slow part)."""
    key = str(Path(soundfont).resolve())
    if key not in _SYNTHS:
        try:
            import tinysoundfont
        except ImportError:
            raise DatasetError(
                "the synthetic dataset needs tinysoundfont (pip install --no-deps tinysoundfont)"
            ) from None
        if not Path(key).is_file():
            raise DatasetError(f"SoundFont {soundfont} does not exist")
        synth = tinysoundfont.Synth(samplerate=SAMPLE_RATE)
        try:
            sfid = synth.sfload(key, max_voices=256)
        except Exception as exc:  # tinysoundfont raises plain exceptions for bad files
            raise DatasetError(f"cannot load SoundFont {soundfont}: {exc}") from None
        _SYNTHS[key] = (synth, sfid)
    return _SYNTHS[key]


def _render_parts(parts: Sequence[Part], frames: int, soundfont: Path) -> np.ndarray:
    """Render ``parts`` together (one MIDI channel each) → (frames, 2) float32."""
    synth, sfid = _synth(soundfont)
    _silence(synth)
    events: list[tuple[int, int, Callable, tuple]] = []  # (sample, order, call, args); note-offs sort first
    melodic = iter(c for c in range(16) if c != 9)
    for part in parts:
        chan = 9 if part.drum else next(melodic)
        synth.control_change(chan, 121, 0)  # reset controllers (pitch bend, expression, …)
        _select(synth, sfid, chan, part)
        synth.control_change(chan, 7, 100)
        synth.control_change(chan, 10, part.pan)
        synth.pitchbend(chan, 8192)
        for n in part.notes:
            on, off = round(n.time * SAMPLE_RATE), round((n.time + n.duration) * SAMPLE_RATE)
            events.append((on, 1, synth.noteon, (chan, n.pitch, n.velocity)))
            events.append((off, 0, synth.noteoff, (chan, n.pitch)))
        if part.vibrato is not None:
            events += _vibrato_events(synth, chan, part, frames)
    events.sort(key=lambda e: (e[0], e[1]))
    out = np.zeros((frames, 2), dtype=np.float32)
    view = out.data.cast("B")  # the array's own buffer, as bytes
    pos = 0
    for sample, _, call, args in events:
        if sample >= frames:
            break
        if sample > pos:
            synth.generate_simple(sample - pos, buffer=view[pos * 8 : sample * 8])
            pos = sample
        call(*args)
    if pos < frames:
        synth.generate_simple(frames - pos, buffer=view[pos * 8 : frames * 8])
    return out


def _select(synth, sfid: int, chan: int, part: Part) -> None:
    """Select the part's GM program (bank 128 for drum kits); a SoundFont without it falls back to preset 0."""
    bank = 128 if part.drum else 0
    for preset in (part.program, 0):
        try:
            synth.program_select(chan, sfid, bank, preset, is_drums=part.drum)
            return
        except RuntimeError:
            continue
    raise DatasetError(f"the SoundFont has no preset {part.program} nor 0 in bank {bank}")


def _silence(synth) -> None:
    """Stop every voice and render until the output is exactly zero, so a render never hears the last one.

    ``sounds_off`` only starts a quick release (about 10 ms in tinysoundfont); the tail is rendered away here.
    """
    synth.sounds_off()
    scratch = np.zeros((441, 2), dtype=np.float32)
    view = scratch.data.cast("B")
    for _ in range(200):
        synth.generate_simple(441, buffer=view)
        if not scratch.any():
            return
    raise DatasetError("the SoundFont synthesizer does not fall silent after sounds_off")


def _vibrato_events(synth, chan: int, part: Part, frames: int) -> list[tuple[int, int, Callable, tuple]]:
    """Pitch-bend updates every 10 ms that add a delayed vibrato to each note (bend range ±2 semitones)."""
    if part.vibrato is None:
        return []
    depth, rate = part.vibrato
    events = []
    for n in part.notes:
        onset = n.time + 0.15
        times = np.arange(onset, n.time + n.duration, 0.01)
        if len(times) == 0:
            continue
        ramp = np.clip((times - onset) / 0.2, 0, 1)  # vibrato fades in
        cents = depth * ramp * np.sin(2 * np.pi * rate * (times - onset))
        values = np.clip(8192 + np.round(cents / 200 * 8192), 0, 16383).astype(int)
        events += [
            (round(t * SAMPLE_RATE), 2, synth.pitchbend, (chan, int(v))) for t, v in zip(times, values, strict=True)
        ]
        events.append((round((n.time + n.duration) * SAMPLE_RATE), 0, synth.pitchbend, (chan, 8192)))
    return events


def _room(rng: np.random.Generator, t60: float, predelay: float, damping: float) -> np.ndarray:
    """A stereo room impulse response: decorrelated decaying noise, darker as it decays → (2, taps), unit energy."""
    from scipy.signal import lfilter

    taps = int(0.7 * t60 * SAMPLE_RATE)  # the tail below −48 dB adds nothing audible
    t = np.arange(taps) / SAMPLE_RATE
    noise = rng.standard_normal((2, taps)) * np.exp(-6.91 * t / t60)
    noise = lfilter([1 - damping], [1, -damping], noise, axis=-1)  # one-pole low-pass: air absorption
    ir = np.concatenate([np.zeros((2, int(predelay * SAMPLE_RATE))), noise], axis=1)
    return (ir / np.sqrt((ir**2).sum() / 2)).astype(np.float32)


def _limit(x: np.ndarray, threshold: float, window: int = 441) -> np.ndarray:
    """Brick-wall look-ahead limiter: (channels, samples) → same, peak ≤ ``threshold``.

    The gain is the minimum of the needed gain over 2·window samples, then averaged over ``window``: every average
    only includes gains at most the one needed at that sample, so no peak passes, and the gain moves in ~10 ms ramps.
    """
    from scipy.ndimage import minimum_filter1d, uniform_filter1d

    peak = np.abs(x).max(0)
    if peak.max() <= threshold:
        return x
    need = np.minimum(1.0, threshold / np.maximum(peak, 1e-12))
    gain = uniform_filter1d(minimum_filter1d(need, 2 * window + 1, mode="nearest"), window, mode="nearest")
    return (x * np.minimum(gain, need)).astype(np.float32)


def render(
    song: Song, soundfont: str | os.PathLike | None = None, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Render a song → stems (4, 2, samples) float32 in SOURCES order, levels set, mixture peak ≤ 0.98.

    ``rng`` draws the room's noise (default: a generator seeded from the song's name).
    """
    import scipy.fft

    soundfont = Path(soundfont) if soundfont is not None else default_soundfont()
    rng = rng if rng is not None else np.random.default_rng(zlib.crc32(song.name.encode()))
    frames = round(song.seconds * SAMPLE_RATE)
    rev = song.reverb
    ir = _room(rng, rev["t60"], rev["predelay"], rev["damping"])
    # the room's spectrum once; each stem's send is then one forward and one inverse FFT
    n_fft = scipy.fft.next_fast_len(frames + ir.shape[-1], real=True)
    room = scipy.fft.rfft(ir, n_fft, axis=-1)
    stems = np.zeros((len(SOURCES), 2, frames), dtype=np.float32)
    for k, name in enumerate(SOURCES):
        dry = _render_parts(song.stems[name], frames, soundfont).T
        if rev[name] > 0:
            wet = scipy.fft.irfft(scipy.fft.rfft(dry.mean(0), n_fft) * room, n_fft, axis=-1)[:, :frames]
            dry = dry + (rev[name] * wet).astype(np.float32)
        target = 10 ** (song.levels_db[name] / 20)
        for _ in range(2):  # limiting lowers the RMS a little: set the level again, limit again
            flat = dry.ravel()
            rms = math.sqrt(float(np.dot(flat, flat)) / flat.size)
            if rms == 0:
                break
            dry = _limit(dry * (target / rms), target * 10 ** (song.crest_db[name] / 20))
        stems[k] = dry
    peak = float(np.abs(stems.sum(0)).max())
    if peak > 0.98:  # the mix must not clip: scale the whole song (a mastering engineer's limiter, simplified)
        stems *= 0.98 / peak
    return stems


# ---------------------------------------------------------------------------------------------------------------
# dataset


def _write_track(folder: Path, stems: np.ndarray, subtype: str) -> None:
    """Write the 4 stems and their exact sum; written to a temporary folder, then renamed into place."""
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
    try:
        if subtype == "PCM_16":
            quant = np.clip(np.round(stems * 32767.0), -32768, 32767).astype(np.int16)
            total = quant.astype(np.int32).sum(0)
            if np.abs(total).max() > 32767:  # cannot happen below a 0.98 peak, but never write a wrapped sum
                raise DatasetError(f"{folder.name}: the 16-bit mixture would clip")
            parts = {"mixture": total.astype(np.int16), **{s: quant[k] for k, s in enumerate(SOURCES)}}
        else:
            parts = {"mixture": stems.sum(0, dtype=np.float32), **{s: stems[k] for k, s in enumerate(SOURCES)}}
        for name, data in parts.items():
            sf.write(str(tmp / f"{name}.wav"), data.T, SAMPLE_RATE, subtype=subtype)
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _plan(tracks: int | Mapping[str, int]) -> dict[str, int]:
    counts = {"train": int(tracks)} if isinstance(tracks, int) else {k: int(v) for k, v in tracks.items()}
    unknown = set(counts) - set(SPLIT_IDS)
    if unknown:
        raise DatasetError(f"tracks: unknown split(s) {sorted(unknown)}; use {', '.join(SPLIT_IDS)}")
    if any(v < 0 for v in counts.values()) or sum(counts.values()) == 0:
        raise DatasetError(f"tracks: need a positive number of tracks, got {counts}")
    return {k: v for k, v in counts.items() if v > 0}


def track_name(split: str, index: int) -> str:
    return f"{split}_{index:03d}"


def synthesize_track(
    split: str, index: int, seconds: float, seed: int, soundfont: str | os.PathLike | None = None
) -> tuple[Song, np.ndarray]:
    """Compose and render one track of the dataset → (song, stems (4, 2, samples))."""
    ss = np.random.SeedSequence([seed, SPLIT_IDS[split], index])
    compose_seq, room_seq = ss.spawn(2)
    song = compose(np.random.default_rng(compose_seq), seconds, track_name(split, index))
    return song, render(song, soundfont, np.random.default_rng(room_seq))


def make_synthetic_dataset(
    root: str | os.PathLike,
    tracks: int | Mapping[str, int] | None = None,
    seconds: float = 10.0,
    seed: int = 0,
    soundfont: str | os.PathLike | None = None,
    subtype: str = "FLOAT",
    overwrite: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> Path:
    """Write a synthetic MUSDB18-HQ-layout dataset to ``root`` and return ``root``.

    Args:
        tracks: tracks per split, default ``{"train": 8, "valid": 2, "test": 2}``; an int = train only.
        seconds: length of every track.
        seed: fixes every track (with :data:`SYNTH_VERSION`).
        soundfont: a GM ``.sf2``; default TimGM6mb from pretty_midi.
        subtype: ``"FLOAT"`` (32-bit float wav) or ``"PCM_16"``; either way mixture == Σ stems exactly.
        overwrite: replace a folder that holds something else (another synthetic dataset or other files).
        progress: called as ``progress(track_name, done, total)`` after each track.

    A folder that already holds this exact dataset (same manifest) is returned as it is: a cache.
    """
    root = Path(root).expanduser()
    counts = _plan({"train": 8, "valid": 2, "test": 2} if tracks is None else tracks)
    if seconds <= 0:
        raise DatasetError(f"seconds: {seconds} must be > 0")
    if subtype not in ("FLOAT", "PCM_16"):
        raise DatasetError(f"subtype: {subtype!r} is not FLOAT or PCM_16")
    sf_path = Path(soundfont).expanduser() if soundfont is not None else default_soundfont()
    if not sf_path.is_file():
        raise DatasetError(f"SoundFont {sf_path} does not exist")
    config = {
        "version": SYNTH_VERSION,
        "seed": int(seed),
        "seconds": float(seconds),
        "tracks": counts,
        "subtype": subtype,
        "soundfont": sf_path.name,
        "soundfont_bytes": sf_path.stat().st_size,
        "sample_rate": SAMPLE_RATE,
    }
    manifest_path = root / MANIFEST
    if manifest_path.is_file():
        try:
            old = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            old = {}
        if old.get("config") == config and _complete(root, counts):
            return root
        if not overwrite:
            raise DatasetError(
                f"{root} holds a different synthetic dataset; pass overwrite=True (--force) to replace it"
            )
    elif root.exists() and any(root.iterdir()) and not overwrite:
        raise DatasetError(f"{root} exists and is not empty; choose a new folder or pass overwrite=True (--force)")
    if overwrite and manifest_path.is_file():
        _remove_listed(root, manifest_path)
    root.mkdir(parents=True, exist_ok=True)
    total, done = sum(counts.values()), 0
    described: dict[str, list[dict[str, Any]]] = {}
    for split, n in counts.items():
        (root / split).mkdir(exist_ok=True)
        described[split] = []
        for i in range(n):
            song, stems = synthesize_track(split, i, seconds, seed, sf_path)
            _write_track(root / split / song.name, stems, subtype)
            described[split].append(song.describe())
            done += 1
            if progress is not None:
                progress(song.name, done, total)
    manifest = {"generator": "danna_sep.data.synth", "config": config, "tracks": described}
    manifest_path.write_text(json.dumps(manifest, indent=1))
    return root


def _remove_listed(root: Path, manifest_path: Path) -> None:
    """Delete the tracks an earlier manifest lists (and the manifest): never anything this module did not write."""
    try:
        old = json.loads(manifest_path.read_text())
        listed = [(split, t["name"]) for split, tracks in old.get("tracks", {}).items() for t in tracks]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        listed = []
    for split, name in listed:
        if split in SPLIT_IDS and name == Path(name).name:
            shutil.rmtree(root / split / name, ignore_errors=True)
    manifest_path.unlink()


def _complete(root: Path, counts: Mapping[str, int]) -> bool:
    return all(
        (root / split / track_name(split, i) / f"{part}.wav").is_file()
        for split, n in counts.items()
        for i in range(n)
        for part in ("mixture", *SOURCES)
    )
