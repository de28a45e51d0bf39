"""The meeting-type classifier: TF-IDF features and a linear model, learned from `dataset`.

Features (`features`): the lower-cased words of the excerpt, the pairs of adjacent
words ("any blockers", "renewal coming"), and the first four and first six letters of
every longer word, cheap stems that carry a class across inflections and related
languages ("entrev" for entrevista/entrevistador/entrevue, "bloq" for bloqueo/bloqué/
bloqueado). Stems of four and six letters did better than one stem of five in 5-fold
cross-validation on the training part (86% against 83%). TF-IDF
weighs them (sublinear term frequency, L2 norm) and a multinomial logistic
regression learns one weight per feature and type.

Its probabilities are then calibrated by one temperature, fitted on out-of-fold
scores of the training part (5-fold), so that a confidence of 0.8 is right about 80%
of the time on excerpts the model has not seen (a model scored on its own training
data is over-confident).

scikit-learn is needed only to train. What is kept (`MeetingClassifier`) is the fitted
vocabulary, the IDF weights, the coefficients, the intercepts and the temperature, and
prediction is that arithmetic on one sparse row in NumPy (`tests/routing/
test_detection.py` checks it gives scikit-learn's scores): about a millisecond for a
4,000-character excerpt, where scikit-learn's own `transform` takes several.

`manage.py train_meeting_classifier` (run by `make install`) stores it in
``var/meeting_classifier.pkl``, stamped with the hash of the data; `classifier()`
loads it, or trains in-process when it is missing or stale, once per process (the
gateway warms it at startup, so no request waits for training).
"""

from __future__ import annotations

import itertools
import logging
import math
import pickle
import re
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings

from routing.detection import dataset

log = logging.getLogger(__name__)

LABELS = ("interview", "sales", "executive", "standup", "support", "other")
FORMAT = 3  # bump when the stored shape or the features change
ARTEFACT_NAME = "meeting_classifier.pkl"
REGULARISATION_C = 50.0
# A feature must occur in two training excerpts: a name or a number seen once teaches
# nothing, and the vocabulary shrinks five-fold (30,000 to 6,000 features), which keeps
# prediction's lookups in the processor's cache (cross-validation: 88% against 87%).
MIN_DF = 2
STEMS = (("~", 4), ("^", 6))

# Letters-only words of two or more letters, or numbers: speaker labels, timestamps
# and punctuation fall away, accented letters stay.
WORD = re.compile(r"[^\W\d_]{2,}|\d+")


def features(text: str) -> list[str]:
    """The features of one excerpt: words, adjacent pairs, and stems of longer words."""
    words = WORD.findall(text.lower())
    found = list(words)
    found.extend(map(" ".join, itertools.pairwise(words)))
    for mark, length in STEMS:
        found.extend([mark + w[:length] for w in words if len(w) > length])
    return found


@dataclass
class MeetingClassifier:
    vocabulary: dict[str, int]
    idf: np.ndarray  # (features,)
    coef: np.ndarray  # (features, labels)
    intercept: np.ndarray  # (labels,)
    labels: tuple[str, ...]
    temperature: float
    data_hash: str
    trained_on: int = 0
    format: int = FORMAT

    def scores(self, text: str) -> np.ndarray:
        """The model's raw decision scores, as scikit-learn's decision_function gives them."""
        found = features(text)
        # Feature -> column in C (map, fromiter, unique), not a Python loop per feature.
        columns = np.fromiter(
            map(self.vocabulary.get, found, repeat(-1, len(found))), np.int64, len(found)
        )
        columns, counts = np.unique(columns[columns >= 0], return_counts=True)
        if not len(columns):
            return self.intercept.copy()
        weights = (1.0 + np.log(counts)) * self.idf[columns]
        weights /= math.sqrt(float((weights * weights).sum()))
        # Multiply and sum rather than `@`: a matrix product goes to the BLAS library, whose
        # worker threads, woken per call, cost milliseconds on a busy machine.
        return (weights[:, np.newaxis] * self.coef[columns]).sum(axis=0) + self.intercept

    def probabilities(self, text: str) -> dict[str, float]:
        """The calibrated probability of each meeting type."""
        scaled = self.scores(text) / self.temperature
        exp = np.exp(scaled - scaled.max())
        exp /= exp.sum()
        return {label: float(p) for label, p in zip(self.labels, exp, strict=True)}

    def predict(self, text: str) -> tuple[str, float]:
        """The likeliest meeting type and its calibrated probability."""
        scaled = self.scores(text) / self.temperature
        best = int(scaled.argmax())
        return self.labels[best], float(1.0 / np.exp(scaled - scaled[best]).sum())

    def fresh(self, data_hash: str) -> bool:
        return self.format == FORMAT and self.data_hash == data_hash

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp")
        with partial.open("wb") as out:
            pickle.dump(self, out, protocol=pickle.HIGHEST_PROTOCOL)
        partial.replace(path)  # a reader never sees half a file

    @classmethod
    def load(cls, path: Path) -> MeetingClassifier | None:
        """The classifier stored at ``path``; None if there is none or it cannot be read."""
        try:
            with path.open("rb") as stored:
                found = pickle.load(stored)  # our own artefact, written by save() under var/
        except FileNotFoundError:
            return None
        except Exception:
            log.warning("the meeting classifier at %s is unreadable; it will be retrained", path)
            return None
        return found if isinstance(found, cls) else None


def _pipeline() -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    return Pipeline(
        [
            ("tfidf", TfidfVectorizer(analyzer=features, sublinear_tf=True, min_df=MIN_DF)),
            (
                "model",
                LogisticRegression(
                    C=REGULARISATION_C, solver="saga", max_iter=5000, random_state=dataset.SEED
                ),
            ),
        ]
    )


def fit_pipeline(examples: Sequence[dataset.Example]) -> Any:
    """The scikit-learn pipeline fitted on ``examples`` (all of them; callers pick the part)."""
    return _pipeline().fit([e.text for e in examples], [e.label for e in examples])


def train(examples: Sequence[dataset.Example]) -> MeetingClassifier:
    """Fit on the training part of ``examples`` and calibrate the temperature."""
    training = [e for e in examples if e.split == "train"]
    pipeline = fit_pipeline(training)
    tfidf, model = pipeline.named_steps["tfidf"], pipeline.named_steps["model"]
    return MeetingClassifier(
        vocabulary={str(term): int(i) for term, i in tfidf.vocabulary_.items()},
        idf=np.asarray(tfidf.idf_, dtype=np.float64),
        coef=np.ascontiguousarray(model.coef_.T, dtype=np.float64),
        intercept=np.asarray(model.intercept_, dtype=np.float64),
        labels=tuple(str(c) for c in model.classes_),
        temperature=_fit_temperature(training),
        data_hash=dataset.fingerprint(examples),
        trained_on=len(training),
    )


def _fit_temperature(training: Sequence[dataset.Example]) -> float:
    """The temperature that minimises the log loss of out-of-fold scores."""
    from sklearn.model_selection import StratifiedKFold

    labels = np.array([e.label for e in training])
    classes = sorted(set(labels))
    scores = np.zeros((len(training), len(classes)))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=dataset.SEED)
    for fit_on, score_on in folds.split(np.zeros(len(labels)), labels):
        pipeline = fit_pipeline([training[i] for i in fit_on])
        scores[score_on] = pipeline.decision_function([training[i].text for i in score_on])
    truth = np.array([classes.index(label) for label in labels])
    best, best_loss = 1.0, math.inf
    for temperature in np.geomspace(0.05, 20.0, 241):
        scaled = scores / temperature
        scaled -= scaled.max(axis=1, keepdims=True)
        log_p = scaled - np.log(np.exp(scaled).sum(axis=1, keepdims=True))
        loss = -float(log_p[np.arange(len(truth)), truth].mean())
        if loss < best_loss:
            best, best_loss = float(temperature), loss
    return best


def artefact_path() -> Path:
    return Path(settings.VAR_DIR) / ARTEFACT_NAME


_lock = threading.Lock()
_loaded: MeetingClassifier | None = None


def classifier() -> MeetingClassifier:
    """This process's classifier: the stored one if fresh, else trained now (and stored)."""
    global _loaded
    if _loaded is None:
        with _lock:
            if _loaded is None:
                _loaded = ensure_trained()
    return _loaded


def ensure_trained(path: Path | None = None, force: bool = False) -> MeetingClassifier:
    """The classifier at ``path`` if it was trained on the current data; else train and store."""
    path = path or artefact_path()
    examples = dataset.load()
    stored = None if force else MeetingClassifier.load(path)
    if stored is not None and stored.fresh(dataset.fingerprint(examples)):
        return stored
    started = time.monotonic()
    trained = train(examples)
    log.info(
        "trained the meeting classifier on %d examples in %.1f s",
        trained.trained_on,
        time.monotonic() - started,
    )
    try:
        trained.save(path)
    except OSError:
        log.warning("could not store the meeting classifier at %s; it lives in memory", path)
    return trained


@dataclass(frozen=True)
class Evaluation:
    labels: tuple[str, ...]
    confusion: list[list[int]]  # rows: the true type, columns: the predicted, in `labels` order
    by_language: dict[str, tuple[int, int]]  # language -> (right, total)

    @property
    def total(self) -> int:
        return sum(sum(row) for row in self.confusion)

    @property
    def accuracy(self) -> float:
        right = sum(self.confusion[i][i] for i in range(len(self.labels)))
        return right / self.total if self.total else 0.0

    def support(self, label: str) -> int:
        return sum(self.confusion[self.labels.index(label)])

    def recall(self, label: str) -> float:
        """The share of excerpts of this type that were classified as it: its accuracy."""
        i = self.labels.index(label)
        return self.confusion[i][i] / self.support(label) if self.support(label) else 0.0

    def precision(self, label: str) -> float:
        i = self.labels.index(label)
        column = sum(row[i] for row in self.confusion)
        return self.confusion[i][i] / column if column else 0.0


def evaluate(model: MeetingClassifier, examples: Sequence[dataset.Example]) -> Evaluation:
    """Accuracy per type and language, and the confusion matrix, on ``examples``."""
    confusion = [[0] * len(LABELS) for _ in LABELS]
    totals: Counter[str] = Counter()
    right: Counter[str] = Counter()
    for example in examples:
        guess, _ = model.predict(example.text)
        confusion[LABELS.index(example.label)][LABELS.index(guess)] += 1
        totals[example.language] += 1
        right[example.language] += guess == example.label
    return Evaluation(
        labels=LABELS,
        confusion=confusion,
        by_language={lang: (right[lang], n) for lang, n in sorted(totals.items())},
    )
