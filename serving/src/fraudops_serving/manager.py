"""What is served, and how it changes: load beside, check, swap atomically.

:class:`Served` is an immutable pair (champion, challenger). Request handlers read
``manager.served`` once and use that object for the whole request, so a swap in the
middle of a request changes nothing for it. A refresh resolves the aliases, loads and
checks every changed bundle beside the served ones, and then replaces ``served`` with
one assignment. A bundle that fails to load or check is refused (logged, counted,
shown in ``GET /model``) and the old one keeps serving; the same refused content is not
retried until it changes.

Start-up: until a champion is loaded the service is not ready, and the reason is kept
in :attr:`ModelManager.not_ready_reason`. A background thread retries with exponential
backoff (registry down at start), then polls every ``poll_interval_s``. When the
registry goes down later, the loaded models keep serving.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fraudops_serving.bundle import BundleError, Model, SessionConfig, load_bundle
from fraudops_serving.sources import Candidate, Source, SourceUnavailable

if TYPE_CHECKING:
    from fraudops_serving.metrics import Metrics
    from fraudops_serving.settings import ServingSettings

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"


@dataclass(frozen=True, slots=True)
class Served:
    """The models that answer, as one immutable value."""

    champion: Model | None = None
    challenger: Model | None = None
    keys: dict[str, str] = field(default_factory=dict)

    def variants(self) -> dict[str, tuple[str, str]]:
        out = {}
        if self.champion is not None:
            out[CHAMPION] = (self.champion.name, self.champion.version)
        if self.challenger is not None:
            out[CHALLENGER] = (self.challenger.name, self.challenger.version)
        return out


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one refresh did for one alias."""

    alias: str
    action: str  # swapped | unchanged | refused | still_refused | unset | removed | unavailable
    detail: str = ""
    version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"alias": self.alias, "action": self.action, "detail": self.detail, "version": self.version}


class ModelManager:
    """Loads, checks and swaps the served models; polls the source in a thread."""

    def __init__(self, settings: ServingSettings, source: Source, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.source = source
        self.metrics = metrics
        self.sessions = SessionConfig(device=settings.device, batch_threads=settings.batch_threads)
        self.served = Served()
        self.not_ready_reason = "starting: no bundle loaded yet"
        self.refused: dict[str, dict[str, Any]] = {}
        self.history: deque[dict[str, Any]] = deque(maxlen=50)
        self.last_refresh: float | None = None
        self.last_error = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        # Set once the polling thread's first refresh is over, whatever its outcome.
        self.first_refresh = threading.Event()
        self._thread: threading.Thread | None = None
        self._pinned_names: tuple[str, ...] = tuple(settings.expected_feature_names)
        self._pinned_schema = settings.feature_schema_version
        self._listeners: list[Any] = []

    @property
    def ready(self) -> bool:
        return self.served.champion is not None

    def on_swap(self, callback: Any) -> None:
        """Call ``callback(served)`` at each swap, just before it is published (on the refreshing thread)."""
        self._listeners.append(callback)

    # ------------------------------------------------------------------ refresh
    def refresh(self) -> list[Outcome]:
        """Resolve both aliases, load what changed beside the served models, swap once."""
        with self._lock:
            return self._refresh()

    def _refresh(self) -> list[Outcome]:
        current = self.served
        champion, challenger = current.champion, current.challenger
        keys = dict(current.keys)
        outcomes: list[Outcome] = []
        changed = False

        champ_out, new_champ, champ_key = self._one(
            CHAMPION, self.settings.champion_alias, champion, keys.get(CHAMPION)
        )
        outcomes.append(champ_out)
        if new_champ is not None:
            champion, changed = new_champ, True
            keys[CHAMPION] = champ_key
        if champion is None and champ_out.action in ("unset", "unavailable", "refused", "still_refused"):
            self.not_ready_reason = {
                "unset": f"alias {self.settings.champion_alias!r} of model {self.settings.model_name!r} is not set",
                "unavailable": champ_out.detail,
            }.get(champ_out.action, f"champion bundle refused: {champ_out.detail}")

        if self.settings.challenger_mode != "off" and champion is not None:
            chal_out, new_chal, chal_key = self._one(
                CHALLENGER, self.settings.challenger_alias, challenger, keys.get(CHALLENGER), champion
            )
            if new_chal is not None:
                challenger, changed = new_chal, True
                keys[CHALLENGER] = chal_key
            elif chal_out.action == "unset" and challenger is not None:
                challenger, changed = None, True
                keys.pop(CHALLENGER, None)
                chal_out = Outcome(CHALLENGER, "removed", "challenger alias removed: all traffic to the champion")
            elif (
                challenger is not None
                and new_champ is not None
                and tuple(challenger.manifest.feature_names) != tuple(champion.manifest.feature_names)
            ):
                challenger, changed = None, True
                keys.pop(CHALLENGER, None)
                chal_out = Outcome(CHALLENGER, "removed", "the new champion serves other features than the challenger")
            outcomes.append(chal_out)

        if changed:
            served = Served(champion, challenger, keys)
            # Listeners prepare for the new models (the request parser, the prediction log)
            # before any request can see them: a row scored by a model is always logged.
            for callback in self._listeners:
                callback(served)
            self.served = served  # the atomic swap
            self.not_ready_reason = "" if champion is not None else self.not_ready_reason
            if self.metrics is not None:
                self.metrics.set_served(served.variants())
        self.last_refresh = time.time()
        for out in outcomes:
            if out.action in ("swapped", "refused", "removed"):  # changes of state, not every poll
                self.history.append({"at": _now(), **out.to_dict()})
        return outcomes

    def _one(
        self, slot: str, alias: str, served: Model | None, served_key: str | None, champion: Model | None = None
    ) -> tuple[Outcome, Model | None, str]:
        try:
            candidate = self.source.resolve(alias)
        except SourceUnavailable as exc:
            self.last_error = str(exc)
            if served is None:
                log.warning("%s: %s", slot, exc)
            else:
                log.warning("%s: %s; keeping version %s", slot, exc, served.version)
            return Outcome(slot, "unavailable", str(exc)), None, ""
        if candidate is None:
            return Outcome(slot, "unset", f"alias {alias!r} not set"), None, ""
        if candidate.key == served_key:
            return Outcome(slot, "unchanged", version=served.version if served else None), None, ""
        refused = self.refused.get(slot)
        if refused is not None and refused["key"] == candidate.key:
            return Outcome(slot, "still_refused", refused["reason"], candidate.version), None, ""
        model, reason = self._load(slot, candidate, champion)
        if model is None:
            self.refused[slot] = {"key": candidate.key, "reason": reason, "candidate": candidate.label, "at": _now()}
            if self.metrics is not None:
                self.metrics.reloads.labels(slot, "refused").inc()
            keeping = f"; keeping version {served.version}" if served is not None else "; nothing served yet"
            log.error("%s: refused %s%s", slot, reason, keeping)
            return Outcome(slot, "refused", reason, candidate.version), None, ""
        self.refused.pop(slot, None)
        if self.metrics is not None:
            self.metrics.reloads.labels(slot, "swapped").inc()
        before = f"version {served.version}" if served is not None else "nothing"
        log.info("%s: now serving %s version %s (was %s)", slot, model.name, model.version, before)
        return Outcome(slot, "swapped", f"{before} -> version {model.version}", model.version), model, candidate.key

    def _load(self, slot: str, candidate: Candidate, champion: Model | None) -> tuple[Model | None, str]:
        names = self._pinned_names
        schema_version = self._pinned_schema
        if champion is not None:  # the challenger must read exactly the champion's inputs
            names = names or tuple(champion.manifest.feature_names)
            schema_version = schema_version or champion.manifest.feature_schema_version
        elif self.served.champion is not None:
            names = names or tuple(self.served.champion.manifest.feature_names)
            schema_version = schema_version or self.served.champion.manifest.feature_schema_version
        reasons: list[str] = []
        try:
            with self.source.fetch(candidate) as places:
                for label, path in places:
                    try:
                        model = load_bundle(
                            path,
                            sessions=self.sessions,
                            feature_schema_version=schema_version,
                            feature_names=names,
                            source=label,
                        )
                    except BundleError as exc:
                        reasons.append(str(exc))
                        continue
                    if (
                        self.settings.model_name
                        and candidate.version is not None
                        and model.version != candidate.version
                    ):
                        reasons.append(
                            f"{label}: manifest says version {model.version}, the registry {candidate.version}"
                        )
                        continue
                    return model, ""
        except SourceUnavailable as exc:
            reasons.append(str(exc))
        except Exception as exc:  # a broken file system, an unexpected library error: refuse, never crash
            log.exception("%s: unexpected error while loading %s", slot, candidate.label)
            reasons.append(f"{type(exc).__name__}: {exc}")
        return None, "; ".join(reasons) or "no bundle found"

    # ------------------------------------------------------------------ thread
    def start(self) -> None:
        """Start the polling thread (first refresh immediately)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="model-reloader", daemon=True)
            self._thread.start()

    def wake(self) -> None:
        """Refresh now instead of at the next poll."""
        self._wake.set()

    def _run(self) -> None:
        delay = self.settings.retry_initial_s
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception:  # the reloader must survive anything; the next poll tries again
                log.exception("model refresh failed")
            self.first_refresh.set()
            if self.ready:
                delay = self.settings.poll_interval_s
            else:
                log.warning("not ready: %s (retrying in %.1f s)", self.not_ready_reason, delay)
            self._wake.wait(timeout=delay)
            self._wake.clear()
            if not self.ready:
                delay = min(delay * 2, self.settings.retry_max_s)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def describe(self) -> dict[str, Any]:
        """Status for ``GET /model`` and ``GET /ready``."""
        served = self.served
        return {
            "ready": served.champion is not None,
            "reason": self.not_ready_reason if served.champion is None else "",
            "source": self.source.kind,
            "champion": served.champion.describe() if served.champion else None,
            "challenger": served.challenger.describe() if served.challenger else None,
            "refused": {k: {kk: vv for kk, vv in v.items() if kk != "key"} for k, v in self.refused.items()},
            "last_refresh": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.last_refresh))
            if self.last_refresh
            else None,
            "last_error": self.last_error,
            "history": list(self.history),
        }


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
