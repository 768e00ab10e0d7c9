"""Spoken-word audio: the Free Spoken Digit Dataset and a synthetic spoken-word set made with espeak-ng.

* :func:`load_fsdd` reads FSDD (``fsdd/recordings/{digit}_{speaker}_{index}.wav``, 8 kHz) from ``--data-dir`` /
  ``$HFP_DATA_DIR`` / the cache and splits it **by speaker**, so test speakers are never heard in training.
* :func:`synthesize_words` speaks a list of words with Debian's ``espeak-ng`` (``apt-get install espeak-ng``)
  in many English voices and voice variants, speeds and pitches, in parallel subprocesses, resamples to
  16 kHz and caches the result on disk (``$HFP_CACHE`` or ``~/.cache/hf_plugins/data``).
* :func:`ast_features` turns waveforms into log-mel filter banks with transformers' ``ASTFeatureExtractor``.

Waveforms are float32 numpy arrays in [-1, 1]; a split is an :class:`AudioSplit`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .._io import atomic_path
from .files import default_cache_dir, resolve_data_file

FSDD_SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
FSDD_SAMPLING_RATE = 8000
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# Pretraining vocabulary: Speech Commands-like words plus short common words; no digit words, so that FSDD is a
# new task for the pretrained model (as ESC-50 / Speech Commands are for AudioSet-pretrained AST).
DEFAULT_WORDS = (
    "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "bed", "bird", "cat", "dog", "happy",
    "house", "marvin", "sheila", "tree", "wow", "backward", "forward", "follow", "learn", "visual", "red", "green",
    "blue", "black", "white", "water", "fire", "light", "night", "day", "sun", "moon", "star", "book", "door",
    "window", "table", "chair", "apple", "orange", "music", "paper", "river", "mountain", "city",
)
ESPEAK_VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029",
                 "en-us-nyc")
ESPEAK_VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
                   "klatt3", "croak", "Andy", "Annie", "Denis", "Gene", "Lee", "Mike", "linda", "max", "steph")


@dataclass
class AudioSplit:
    """Waveforms with integer labels. ``names[label]`` is the class name; ``groups`` the speaker or voice."""

    waves: list
    labels: np.ndarray
    names: list
    sampling_rate: int = 16000
    groups: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.waves)

    def subset(self, indices) -> "AudioSplit":
        """The examples at ``indices``."""
        indices = list(indices)
        return AudioSplit([self.waves[i] for i in indices], self.labels[indices], self.names, self.sampling_rate,
                          [self.groups[i] for i in indices] if self.groups else [])


def load_fsdd(data_dir: str | os.PathLike | None = None, test_speakers: Sequence[str] = ("theo", "yweweler"),
              validation_speakers: Sequence[str] = ("nicolas",), sampling_rate: int = 16000,
              max_per_speaker: int | None = None) -> dict[str, AudioSplit]:
    """Free Spoken Digit Dataset split by speaker: ``{"train", "validation", "test"}`` -> :class:`AudioSplit`.

    Labels are the digits 0-9 (``names`` = ``DIGIT_WORDS``). Audio is resampled from 8 kHz to ``sampling_rate``.
    ``max_per_speaker`` keeps the first N recordings of each speaker in a fixed, digit-balanced order (smoke tests).
    """
    unknown = sorted((set(test_speakers) | set(validation_speakers)) - set(FSDD_SPEAKERS))
    if unknown:
        raise ValueError(f"load_fsdd: unknown speakers {unknown}; FSDD speakers are {list(FSDD_SPEAKERS)}")
    if set(test_speakers) & set(validation_speakers):
        raise ValueError(f"load_fsdd: test_speakers {list(test_speakers)} and validation_speakers "
                         f"{list(validation_speakers)} overlap")
    folder = resolve_data_file("fsdd/recordings/0_george_0.wav", data_dir, download=False).parent
    import soundfile

    files: dict[str, list] = {s: [] for s in FSDD_SPEAKERS}
    for path in sorted(folder.glob("*.wav")):
        digit, speaker, index = path.stem.split("_")
        if speaker in files:
            files[speaker].append((int(index), int(digit), path))
    splits = {"train": [], "validation": [], "test": []}
    for speaker, items in files.items():
        items.sort(key=lambda item: (item[0], item[1]))  # index-major: every digit before the next take
        if max_per_speaker is not None:
            items = items[:max_per_speaker]
        split = "test" if speaker in test_speakers else "validation" if speaker in validation_speakers else "train"
        splits[split] += [(speaker, digit, path) for _, digit, path in items]
    out = {}
    for split, items in splits.items():
        waves = []
        for _, _, path in items:
            wave, rate = soundfile.read(str(path), dtype="float32", always_2d=False)
            if wave.ndim > 1:
                wave = wave.mean(axis=1)
            waves.append(resample(wave, rate, sampling_rate))
        out[split] = AudioSplit(waves, np.array([d for _, d, _ in items], dtype=np.int64), list(DIGIT_WORDS),
                                sampling_rate, [s for s, _, _ in items])
    return out


def synthesize_words(words: Sequence[str] = DEFAULT_WORDS, samples_per_word: int = 40, seed: int = 0,
                     sampling_rate: int = 16000, cache_dir: str | os.PathLike | None = None,
                     workers: int | None = None, noise: bool = True, progress: bool = True) -> AudioSplit:
    """Speak every word ``samples_per_word`` times with random espeak-ng voices, speeds and pitches.

    Each sample draws an English voice (8 accents) and a voice variant (26), a speed of 110-230 words per
    minute, a pitch of 15-85 and an amplitude; leading and trailing silence is trimmed, and (``noise``) a random
    gain and white noise at 15-40 dB SNR are applied. Generation runs ``workers`` espeak-ng subprocesses at a
    time (default: 2) and is cached as one ``.npz`` keyed by every argument and the espeak-ng version.
    """
    if not words or samples_per_word < 1:
        raise ValueError(f"synthesize_words needs words and samples_per_word >= 1, got {len(words)} words, "
                         f"samples_per_word={samples_per_word}")
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise RuntimeError("espeak-ng is not installed; install it with `apt-get install espeak-ng`")
    version = subprocess.run([espeak, "--version"], capture_output=True, text=True).stdout.strip()
    key = json.dumps([list(words), samples_per_word, seed, sampling_rate, noise, version, ESPEAK_VOICES,
                      ESPEAK_VARIANTS, 2])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "espeak_words"
    path = cache / f"words-{digest}.npz"
    if path.is_file():
        return _load_npz(path)

    rng = random.Random(seed)
    jobs = []
    for label, word in enumerate(words):
        for _ in range(samples_per_word):
            variant = rng.choice(ESPEAK_VARIANTS)
            voice = rng.choice(ESPEAK_VOICES) + (f"+{variant}" if variant else "")
            jobs.append((label, word, voice, rng.randint(110, 230), rng.randint(15, 85), rng.randint(80, 160),
                         rng.getrandbits(32)))

    def speak(job):
        label, word, voice, speed, pitch, amplitude, job_seed = job
        cmd = [espeak, "-v", voice, "-s", str(speed), "-p", str(pitch), "-a", str(amplitude), "--stdout", word]
        result = subprocess.run(cmd, capture_output=True, check=True)
        wave, rate = _read_wav_bytes(result.stdout)
        wave = resample(_trim(wave), rate, sampling_rate)
        if noise:
            g = np.random.default_rng(job_seed)
            wave = wave * g.uniform(0.3, 1.0)
            snr = g.uniform(15, 40)
            power = float(np.mean(wave**2)) + 1e-12
            wave = wave + g.normal(0, np.sqrt(power / 10 ** (snr / 10)), wave.shape)
        return np.clip(wave, -1, 1).astype(np.float32)

    iterator_kwargs = dict(total=len(jobs), desc="espeak-ng", disable=not progress)
    with ThreadPoolExecutor(max_workers=workers or 2) as pool:
        results = pool.map(speak, jobs)
        try:
            from tqdm.auto import tqdm

            results = tqdm(results, **iterator_kwargs)
        except ImportError:
            pass
        waves = list(results)
    split = AudioSplit(waves, np.array([j[0] for j in jobs], dtype=np.int64), list(words), sampling_rate,
                       [j[2] for j in jobs])
    _save_npz(path, split)
    return split


def ast_features(waves: Sequence[np.ndarray], sampling_rate: int = 16000, num_mel_bins: int = 128,
                 max_length: int = 1024, mean: float | None = None, std: float | None = None,
                 batch_size: int = 256):
    """Log-mel filter banks of shape ``(N, max_length, num_mel_bins)`` (float32) from ``ASTFeatureExtractor``.

    With ``mean``/``std`` the features are normalised as AST does (``(x - mean) / (2 * std)``); without, they are
    returned raw so that the statistics of a training set can be measured (see :func:`feature_statistics`).
    """
    extractor = make_feature_extractor(num_mel_bins, max_length, mean, std, sampling_rate)
    out = np.empty((len(waves), max_length, num_mel_bins), dtype=np.float32)
    for start in range(0, len(waves), batch_size):
        chunk = [np.asarray(w, dtype=np.float32) for w in waves[start:start + batch_size]]
        out[start:start + len(chunk)] = extractor(chunk, sampling_rate=sampling_rate, return_tensors="np")["input_values"]
    return out


def make_feature_extractor(num_mel_bins: int = 128, max_length: int = 1024, mean: float | None = None,
                           std: float | None = None, sampling_rate: int = 16000):
    """An ``ASTFeatureExtractor`` (normalising only when ``mean`` and ``std`` are given)."""
    from transformers import ASTFeatureExtractor

    normalize = mean is not None and std is not None
    kwargs = dict(mean=float(mean), std=float(std)) if normalize else {}
    return ASTFeatureExtractor(num_mel_bins=num_mel_bins, max_length=max_length, sampling_rate=sampling_rate,
                               do_normalize=normalize, **kwargs)


def feature_statistics(features: np.ndarray, frames: Sequence[int] | None = None) -> tuple[float, float]:
    """Mean and standard deviation of raw filter banks (the AST recipe's dataset normalisation)."""
    values = features if frames is None else np.concatenate([f[:n] for f, n in zip(features, frames)])
    return float(values.mean()), float(values.std())


def resample(wave: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited resampling by zero-padding / truncating the spectrum (exact for periodic signals)."""
    wave = np.asarray(wave, dtype=np.float64)
    if orig_rate == target_rate or len(wave) == 0:
        return wave.astype(np.float32)
    n_out = max(1, int(round(len(wave) * target_rate / orig_rate)))
    spectrum = np.fft.rfft(wave)
    out = np.zeros(n_out // 2 + 1, dtype=np.complex128)
    keep = min(len(spectrum), len(out))
    out[:keep] = spectrum[:keep]
    return (np.fft.irfft(out, n_out) * (n_out / len(wave))).astype(np.float32)


class AudioFeatureDataset:
    """A torch-style dataset of ``{"input_values": (frames, mel), "labels": int}`` from precomputed features."""

    def __init__(self, features: np.ndarray, labels: np.ndarray):
        if len(features) != len(labels):
            raise ValueError(f"features ({len(features)}) and labels ({len(labels)}) differ in length")
        self.features = features
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index):
        import torch

        return {"input_values": torch.from_numpy(self.features[index]), "labels": torch.tensor(int(self.labels[index]))}


# -- helpers ---------------------------------------------------------------------------------------------


def _read_wav_bytes(data: bytes):
    import soundfile

    # espeak-ng writes a streaming header (data size 0x7fffffff); soundfile reads it up to the real end.
    wave, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=False)
    return (wave if wave.ndim == 1 else wave.mean(axis=1)), rate


def _trim(wave: np.ndarray, threshold: float = 0.02, margin: int = 400) -> np.ndarray:
    loud = np.flatnonzero(np.abs(wave) > threshold * (np.abs(wave).max() + 1e-9))
    if len(loud) == 0:
        return wave
    return wave[max(0, loud[0] - margin): loud[-1] + margin]


def _save_npz(path: Path, split: AudioSplit) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lengths = np.array([len(w) for w in split.waves], dtype=np.int64)
    audio = np.concatenate(split.waves) if split.waves else np.zeros(0, np.float32)
    with atomic_path(path) as tmp:
        np.savez(tmp, audio=(audio * 32767).astype(np.int16), lengths=lengths, labels=split.labels,
                 meta=np.array(json.dumps({"names": split.names, "groups": split.groups,
                                           "sampling_rate": split.sampling_rate})))


def _load_npz(path: Path) -> AudioSplit:
    with np.load(path, allow_pickle=False) as data:
        audio = data["audio"].astype(np.float32) / 32767
        bounds = np.concatenate([[0], np.cumsum(data["lengths"])])
        meta = json.loads(str(data["meta"]))
        waves = [audio[bounds[i]:bounds[i + 1]] for i in range(len(bounds) - 1)]
        return AudioSplit(waves, data["labels"].astype(np.int64), meta["names"], meta["sampling_rate"], meta["groups"])
