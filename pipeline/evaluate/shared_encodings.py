"""CTranslate2 encoder outputs shared between models whose encoders are the same, each charged the encoder's time.

CTranslate2 models with the same encoder weights (a decoder-only student and
its teacher) encode each utterance once: the others decode from the stored
output and are charged the encoder seconds measured for it (rows count these
utterances in ``encoder_reused``). A float32 conversion whose encoder
reproduces the transformers float32 one it was converted from (checked on
its first batch) decodes from the outputs the PyTorch students computed and
is charged CTranslate2's encoder seconds measured on that batch (rows say so
in ``encoder_source``). Encoders run one utterance at a time on the CPU
(faster there; ``bench/encoder_memo.py``), and ``encoder_memo`` keeps the
transformers outputs, and CTranslate2's own where they are used (int8), on
disk between stages and runs (:mod:`pipeline.core.encoder_memo`): outputs
served from there count as reused too, charged the encoder seconds measured
on one utterance re-encoded (and compared bit for bit) in this run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline.core.encoder_memo import EncoderMemo
from pipeline.data.manifest import Utterance

log = logging.getLogger(__name__)

# A CTranslate2 float32 encoder "reproduces" transformers' outputs when the largest difference on the checked batch is
# at most this fraction of the largest output value (whisper-base: 1.5e-3 of 24.6, 6e-5; int8: 0.8 of it).
SAME_ENCODER_TOLERANCE = 1e-3


class SharedEncodings:
    """CTranslate2 encoder outputs per utterance, for the models whose encoder is the same (see
    :func:`pipeline.models.ct2_format.encoder_fingerprint`), with the seconds each one took to compute.

    A model that finds an utterance here decodes from the stored output and is
    charged the encoder seconds measured when it was computed, so its decode
    time still counts the encoder it would have run.

    With a ``reference`` (the float32 transformers encoder of the checkpoint the CTranslate2 model was converted
    from, outputs kept by :class:`pipeline.models.decode.EncoderStore`), the first batch is encoded by CTranslate2, timed,
    and compared with the reference; when it reproduces them (:data:`SAME_ENCODER_TOLERANCE`), every utterance
    decodes from the reference's outputs, which the PyTorch students computed already, and is charged the
    CTranslate2 encoder's measured seconds per utterance: the encoder's cost does not depend on the utterance
    (every input is 30 s of log-mel). Otherwise CTranslate2 encodes every utterance itself.

    With a ``disk`` memo (CTranslate2's own outputs of this encoder, compute type and setting, kept by an earlier
    run: :func:`ct2_encoder_memo`), where no reference stands: the first utterance is encoded by CTranslate2, timed,
    and must equal its stored output bit for bit; then every stored output is used and charged that measured time,
    and what is not stored yet is encoded and stored. An output that differs turns the memo off for this encoder
    (a warning says so). So the int8 models of one more student variant do not encode the test sets again.
    """

    def __init__(self) -> None:
        self.key: tuple[str, str] | None = None
        self.outputs: dict[str, np.ndarray] = {}
        self.seconds: dict[str, float] = {}
        self.reference: Callable[[list[Utterance], Path], np.ndarray] | None = None
        self.disk: EncoderMemo | None = None
        self.per_utterance: float | None = None  # CTranslate2's measured encoder seconds, once a stand-in holds
        self.source = ""

    def use(
        self,
        key: tuple[str, str],
        reference: Callable[[list[Utterance], Path], np.ndarray] | None = None,
        disk: EncoderMemo | None = None,
    ) -> None:
        """Switch to the encoder ``key`` (fingerprint, compute type); the previous one's outputs are dropped."""
        if key != self.key:
            self.key, self.outputs, self.seconds = key, {}, {}
            self.reference, self.disk, self.per_utterance, self.source = reference, disk, None, ""

    def _fetch(self, todo: list[Utterance], root: Path) -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        return self.reference(todo, root), time.perf_counter() - start

    def _encode(
        self, model, todo: list[Utterance], root: Path, features
    ) -> tuple[np.ndarray, list[bool], float, float]:
        """(outputs of ``todo``, which of them CTranslate2 did not compute inside the caller's timer, encoder
        seconds per utterance, seconds spent fetching stand-in outputs: inside the caller's timer, but no part of
        what the CTranslate2 model costs)."""
        if self.reference is not None:
            if self.per_utterance is not None:
                expected, fetch = self._fetch(todo, root)
                return expected, [True] * len(todo), self.per_utterance, fetch
            encoded, share = _ct2_encode(model, todo, features)
            expected, fetch = self._fetch(todo, root)
            if self._reproduces(encoded, expected, len(todo), share):
                return expected, [True] * len(todo), share, fetch
            self.reference = None
            self._store(todo, root, encoded)
            return encoded, [False] * len(todo), share, fetch
        if self.disk is None:
            encoded, share = _ct2_encode(model, todo, features)
            return encoded, [False] * len(todo), share, 0.0
        return self._from_disk(model, todo, root, features)

    def _from_disk(self, model, todo: list[Utterance], root: Path, features):
        """``_encode`` with the disk memo: stored outputs where the memo holds (checked once), CTranslate2's
        (then stored) elsewhere."""
        outputs: list[np.ndarray | None] = [None] * len(todo)
        fetch = 0.0
        if self.per_utterance is None:  # not checked yet: encode the first one, time it, compare
            first, share = _ct2_encode(model, todo[:1], features)
            start = time.perf_counter()
            stored = self.disk.load(root / todo[0].audio)
            fetch += time.perf_counter() - start
            if stored is not None and not np.array_equal(stored, first[0]):
                log.warning(
                    "CTranslate2 encoder %s|%s: the output kept in %s differs from this run's (max |diff| %.3g): "
                    "the memo is not used for this encoder",
                    self.key[0][:12],
                    self.key[1],
                    self.disk.dir,
                    float(np.abs(stored - first[0]).max()),
                )
                self.disk = None
                if len(todo) > 1:
                    first = np.concatenate([first, _ct2_encode(model, todo[1:], features)[0]])
                return first, [False] * len(todo), share, fetch
            if stored is None:
                self.disk.save(root / todo[0].audio, first[0])
            self.per_utterance = share
            outputs[0] = first[0]
        kept = [False] * len(todo)
        for i, u in enumerate(todo):
            if outputs[i] is None:
                start = time.perf_counter()
                outputs[i] = self.disk.load(root / u.audio)
                fetch += time.perf_counter() - start
                kept[i] = outputs[i] is not None
        missing = [i for i, value in enumerate(outputs) if value is None]
        if missing:
            encoded, _ = _ct2_encode(model, [todo[i] for i in missing], features)
            for i, value in zip(missing, encoded):
                outputs[i] = value
                self.disk.save(root / todo[i].audio, value)
        if any(kept) and not self.source:
            self.source = (
                f"encoder memo (CTranslate2's own {self.key[1]} outputs from an earlier run; the first utterance "
                f"re-encoded and equal bit for bit)"
            )
        return np.stack(outputs), kept, self.per_utterance, fetch

    def _store(self, todo: list[Utterance], root: Path, encoded: np.ndarray) -> None:
        if self.disk is not None:
            for u, value in zip(todo, encoded):
                self.disk.save(root / u.audio, value)

    def _reproduces(self, encoded: np.ndarray, expected: np.ndarray, n: int, share: float) -> bool:
        """Whether CTranslate2's outputs ``encoded`` (of ``n`` utterances, ``share`` seconds each) match the
        reference's ``expected`` (:data:`SAME_ENCODER_TOLERANCE`); if so, the reference stands for the encoder from
        now on and is charged ``share`` per utterance."""
        diff = float(np.abs(encoded - expected).max())
        scale = float(np.abs(expected).max())
        if diff <= SAME_ENCODER_TOLERANCE * scale:
            self.per_utterance = share
            self.source = (
                f"transformers float32 encoder (CTranslate2's matched it on {n} utterances: max |diff| "
                f"{diff:.2g} of {scale:.3g})"
            )
            log.info(
                "%s|%s: decoding from the %s; charged CTranslate2's %.3f s per utterance",
                self.key[0][:12],
                self.key[1],
                self.source,
                share,
            )
            return True
        log.warning(
            "CTranslate2 encoder %s differs from the transformers one it was converted from (max |diff| %.3g of "
            "%.3g): it encodes every utterance itself",
            self.key[0][:12],
            diff,
            scale,
        )
        return False

    def batch(self, model, chunk: list[Utterance], root: Path, features: Callable[[list[Utterance]], np.ndarray]):
        """(encoder outputs of ``chunk``, seconds to add to the timed ones, ids of the reused ones).

        The seconds added: the encoder seconds charged for outputs an earlier model computed, and for outputs
        taken from a stand-in (the reference, the disk memo), less the time spent fetching those."""
        todo = [u for u in chunk if u.id not in self.outputs]
        adjust = 0.0
        adopted: list[str] = []
        if todo:
            encoded, stand_in, share, fetch = self._encode(model, todo, root, features)
            adjust -= fetch
            for u, out, other in zip(todo, encoded, stand_in):
                self.outputs[u.id], self.seconds[u.id] = out, share
                if other:
                    adjust += share
                    adopted.append(u.id)
        reused = [u for u in chunk if u not in todo]
        adjust += sum(self.seconds[u.id] for u in reused)
        # Disk-memo outputs count as reused (not encoded by this model in this run); the reference's do not: its
        # rows name their source in encoder_source instead, as before.
        from_disk = adopted if self.reference is None else []
        return np.stack([self.outputs[u.id] for u in chunk]), adjust, [u.id for u in reused] + from_disk


def ct2_encoder_memo(root: Path, key: tuple[str, str], extractor, setting: dict) -> EncoderMemo:
    """The encoder memo folder of CTranslate2's own outputs for the encoder ``key`` (fingerprint, effective compute
    type) on this CPU, under the CTranslate2 version and ``setting`` (``ct2_tuning.applied``: environment and
    threads, which change int8 outputs)."""
    import ctranslate2

    from pipeline.core.machine import compute_identity

    fingerprint, compute = key
    env = ",".join(f"{k}={v}" for k, v in sorted(setting.get("env", {}).items()))
    return EncoderMemo(
        root,
        fingerprint,
        f"ctranslate2 {ctranslate2.__version__}:cpu:{compute}:env[{env}]:threads={setting.get('threads', 0)}",
        extractor,
        compute_identity("cpu"),
    )


def _ct2_encode(
    model, todo: list[Utterance], features: Callable[[list[Utterance]], np.ndarray]
) -> tuple[np.ndarray, float]:
    """CTranslate2 ``model``'s encoder outputs of ``todo``, and the seconds per utterance they took (log-mel
    features included)."""
    import ctranslate2

    start = time.perf_counter()
    feats = np.ascontiguousarray(features(todo), dtype=np.float32)
    # One utterance at a time on the CPU: int8_float32 encodes ~20 % faster so than in a batch of 16 on this
    # 2-core machine (bench/encoder_memo.py); decoding stays batched.
    step = 1 if getattr(model, "device", "cpu") == "cpu" else len(feats)
    encoded = np.concatenate(
        [
            np.array(model.encode(ctranslate2.StorageView.from_array(feats[i : i + step])))
            for i in range(0, len(feats), step)
        ]
    )
    return encoded, (time.perf_counter() - start) / len(todo)


def transformers_encoder(extractor, source: Path, memo: Path | None) -> Callable[[list[Utterance], Path], np.ndarray]:
    """Float32 transformers encoder outputs of the checkpoint ``source`` (loaded at the first call), kept by
    :class:`pipeline.models.decode.EncoderStore` under the key the PyTorch runs use: a student with the same encoder
    weights left them in memory or in the encoder memo (``memo``: its folder, or None)."""
    import torch
    from transformers import WhisperForConditionalGeneration

    from pipeline.core.encoder_memo import encoder_identity
    from pipeline.models.decode import EncoderStore

    stores: dict[Path, EncoderStore] = {}
    loaded = []

    def outputs(utts: list[Utterance], root: Path) -> np.ndarray:
        if not loaded:
            model = WhisperForConditionalGeneration.from_pretrained(source).eval()
            loaded.append((model, (encoder_identity(model),)))
        model, key = loaded[0]
        if root not in stores:
            stores[root] = EncoderStore(
                model, extractor, root, True, torch.device("cpu"), key=key, dtype=torch.float32, disk=memo
            )
        stores[root].fill(utts)
        return torch.stack([stores[root].memo[u.id] for u in utts]).numpy()

    return outputs
