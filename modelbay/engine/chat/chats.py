"""Chat sessions: bound to a platform thread or channel and a model version; answers stream and are measured.

The conversation context lives in Redis (per session, expiring after MODELBAY_CHAT_HISTORY_TTL), so chats
keep their memory even when the database keeps no text: the database stores prompt and answer text only
when MODELBAY_STORE_TRANSCRIPTS is on, and always stores each turn's row (ids for ratings, token counts).
The history alternates: a question that got no answer (failed or stopped before any text) is not kept, so
templates that demand user/assistant turns in strict order take every later message.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
from redis import Redis
from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from modelbay.config import Settings
from modelbay.engine.analytics.analytics import Analytics, AnswerEvent, latency_bucket
from modelbay.engine.analytics.telemetry import Telemetry  # Prometheus (telemetry)
from modelbay.engine.catalog.registry import Registry
from modelbay.engine.chat.records import (
    DOWN_REASONS,
    UP_REASONS,
    Answered,
    AnswerRecord,
    ChatEvent,
    Delta,
    Notice,
    Place,
    RatingRecord,
    SessionRecord,
)
from modelbay.engine.db.database import Database, idempotent
from modelbay.engine.db.schema.analytics import AnalyticsEvent
from modelbay.engine.db.schema.catalog import Model, ModelVersion
from modelbay.engine.db.schema.chat import ChatSession, Feedback, Message
from modelbay.engine.db.schema.experiments import (  # experiments: variant totals kept here, below the service
    ArenaBattle,  # arena: a person's battles and votes are erased by forget
    ArenaVote,
    Experiment,
    ExperimentExposure,
    ExperimentLatency,
    ExperimentVariant,
)
from modelbay.engine.errors import (
    AnswerNotFound,
    BackendFailed,
    BaseModelMissing,
    ExperimentModelHidden,
    ModelBayError,
    NeedsInstall,
    NoChatHere,
    NotServed,
    WrongReason,
)
from modelbay.engine.inference.backends.base import BACKENDS, Adjusted, Backend, Finished, Generation
from modelbay.engine.inference.serving import ServerRecord, Servers, installed_version
from modelbay.engine.inference.templates import no_system_notice
from modelbay.engine.installs.loadable import FINETUNE, Tuned, check_folder, check_tuned, tuned_parts, weights_folder
from modelbay.engine.records import ModelRecord, VersionRecord, record_from_row

log = logging.getLogger(__name__)

__all__ = ["Chats"]


HISTORY_LIMIT = 200  # turns kept in Redis per session; the context window trims further
BACKEND_FRESH_FOR = 10.0  # seconds a chosen backend is reused before the server table is read again
KEEP_IN_PROCESS = 2  # models kept loaded for in-process answers; the least recently used one goes first
KEEP_BACKENDS = 16  # backends kept in all (HTTP ones hold only a connection pool)
# The backends (BACKENDS names) that answer: a version's running server, else a model loaded in this process
# (how each is built: the `Backend` docstring).
SERVED_BY = "vllm"
IN_PROCESS = "transformers"
IN_PROCESS_ONNX = "onnx"  # an ONNX export (version format "onnx"), answered with onnxruntime in this process
# Seconds this process trusts what it last read of the chat open at a place; opening or closing a chat here
# updates it at once, another process's change shows after at most this long.
PLACE_FRESH_FOR = 5.0
_TURN_POLL = 0.01
# KEYS: ticket, turn, history; ARGV: ttl. Returns {my ticket, the turn reached, the history}.
_TAKE_TURN = """
local ticket = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[1])
local turn = tonumber(redis.call('GET', KEYS[2]) or '0')
return {ticket, turn, redis.call('LRANGE', KEYS[3], 0, -1)}
"""




@dataclass(frozen=True)
class _Route:
    """The running server that answers a version (None: none does), and for a LoRA fine-tune on its base's server,
    the adapter's served name."""

    server: ServerRecord | None
    parts: Tuned | None  # a fine-tune's parts as its record lists them
    adapter: str | None  # the name requests use for the hot-loaded adapter
    template_path: str | None  # the folder whose tokenizer holds the chat template the server applies
    why_not_served: str | None  # why no server answers, when that is more than "none runs"


def _has_tokenizer_files(folder: Path) -> bool:
    return (folder / "tokenizer_config.json").is_file()


@dataclass
class _Held:
    """A backend chosen for a model version, with how many answers stream through it right now."""

    backend: Backend
    server: ServerRecord | None
    chosen_at: float
    streams: int = 0
    retired: bool = False  # replaced or evicted: closed when its last answer ends


class Chats:
    """Opens sessions, answers messages in order with the right backend, stores turns, takes ratings.

    Backends are cached per model version, at most `keep_in_process` of them with a model loaded here; one
    that is replaced (another server), evicted (other models used since), or no longer needed (its last chat
    ended, its version uninstalled) is closed as soon as no answer streams through it, releasing its model.
    """

    def __init__(self, settings: Settings, db: Database, redis: Redis, registry: Registry, servers: Servers,
                 analytics: Analytics, *, keep_in_process: int = KEEP_IN_PROCESS,
                 keep_backends: int = KEEP_BACKENDS, telemetry: Telemetry | None = None) -> None:
        self.settings = settings
        self.telemetry = telemetry  # Prometheus counters of stored answers (telemetry), when the process keeps them
        self._db = db
        self.redis = redis
        self.registry = registry
        self.servers = servers
        self.analytics = analytics
        self.keep_in_process = max(1, keep_in_process)  # the backend just chosen always stays
        self.keep_backends = max(1, keep_backends)
        self._backends: OrderedDict[int, _Held] = OrderedDict()
        self._backends_lock = threading.Lock()  # guards _backends and each _Held's counts
        self._choosing = threading.Lock()  # one backend choice at a time: a model is loaded once, not twice
        self._places: dict[Place, tuple[float, SessionRecord | None]] = {}
        self._turn_script = redis.register_script(_TAKE_TURN)

    # -- sessions ------------------------------------------------------------------------------------------
    def open(self, place: Place, user_key: str, model: str, system_prompt: str | None = None, *,
             version_id: int | None = None, variant_id: int | None = None) -> SessionRecord:
        """Start a chat with the newest installed version of a model here, closing any chat open here.

        Experiments open a variant's own version (`version_id`) and name the variant (`variant_id`): its serving
        parameters apply to the answers, and its answers and ratings count in its totals while the experiment runs.

        Raises:
            ModelNotFound: no model has that name.
            NeedsInstall: no version of it is installed.
            NotServed: no server runs it and it cannot be answered in this process (a LoRA, or turned off).
            ServerFailed: a LoRA adapter could not be loaded into its base model's server.
            IncompleteModel: in-process: the installed files are incomplete on disk.
            InferenceUnavailable: in-process: torch and transformers are not installed.
            ModelUnloadable: in-process: the files are there but loading them failed.
        """
        record = self.registry.get(model)
        version = installed_version(record)
        if version_id is not None:  # experiments: the variant's version, which must still be installed
            version = next((v for v in record.versions if v.id == version_id and v.install_state == "installed"
                            and v.local_path), None)
            if version is None:
                raise NeedsInstall(record.name)
        backend = self.backend_for(record, version)  # say now, not at the first message, if it cannot be answered
        notices: tuple[str, ...] = ()
        if system_prompt and not backend.takes_system:  # found by rendering the template once, kept per version
            # experiments: a variant's chat never names its model
            notices = (no_system_notice("This model" if variant_id is not None else record.display_name),)
        with self._db.session() as session:
            replaced = set()
            for row in session.scalars(select(ChatSession).where(*self._open_at(place))):
                row.closed_at = datetime.now(timezone.utc)
                replaced.add(row.model_version_id)
            row = ChatSession(platform=place.platform, channel_id=place.channel_id, thread_id=place.thread_id,
                              user_key=user_key, model_version_id=version.id, system_prompt=system_prompt or None,
                              variant_id=variant_id)
            session.add(row)
            session.flush()
            session_id = row.id
        opened = self.get(session_id)
        self._places[place] = (time.monotonic(), opened)
        self._release_unused(replaced - {version.id})
        return replace(opened, notices=notices)

    @staticmethod
    def _open_at(place: Place) -> list[Any]:
        return [
            ChatSession.platform == place.platform, ChatSession.channel_id == place.channel_id,
            ChatSession.thread_id.is_(None) if place.thread_id is None else ChatSession.thread_id == place.thread_id,
            ChatSession.closed_at.is_(None),
        ]

    def current(self, place: Place) -> SessionRecord | None:
        """Return the chat open at a place, if any."""
        known = self._places.get(place)
        if known is not None and time.monotonic() - known[0] < PLACE_FRESH_FOR:
            return known[1]
        found = self._find(*self._open_at(place))
        self._places[place] = (time.monotonic(), found)
        return found


    def _current_or_refuse(self, place: Place) -> SessionRecord:
        current = self.current(place)
        if current is None:
            raise NoChatHere()
        return current
    def get(self, session_id: int) -> SessionRecord:
        """Return one open chat session.

        Raises:
            NoChatHere: no open chat has that id.
        """
        found = self._find(ChatSession.id == session_id, ChatSession.closed_at.is_(None))
        if found is None:
            raise NoChatHere()
        return found

    def _find(self, *where: Any) -> SessionRecord | None:
        found = self._select(*where, limit=1)
        return found[0] if found else None

    def _select(self, *where: Any, limit: int) -> list[SessionRecord]:
        with self._db.session() as session:
            rows = session.execute(
                select(ChatSession, Model, ExperimentVariant.params, Experiment.name, Experiment.status)
                .join(ModelVersion, ModelVersion.id == ChatSession.model_version_id)
                .join(Model, Model.id == ModelVersion.model_id)
                .outerjoin(ExperimentVariant, ExperimentVariant.id == ChatSession.variant_id)  # its serving params
                .outerjoin(Experiment, Experiment.id == ExperimentVariant.experiment_id)  # blinded while it runs
                .where(*where).order_by(ChatSession.id.desc()).limit(limit)
            ).all()
            return [
                record_from_row(SessionRecord, row, place=Place(row.platform, row.channel_id, row.thread_id),
                                model_name=model.name, model_display_name=model.display_name,
                                closed=row.closed_at is not None, temperature=(params or {}).get("temperature"),
                                max_tokens=(params or {}).get("max_tokens"),
                                experiment=experiment if status == "running" else None)
                for row, model, params, experiment, status in rows
            ]

    def recent(self, user_key: str, limit: int = 5) -> list[SessionRecord]:
        """The chats a person opened most recently, open or ended."""
        return self._select(ChatSession.user_key == user_key, limit=limit)

    def close(self, place: Place) -> SessionRecord:
        """End the chat open at a place.

        Raises:
            NoChatHere: no chat is open there.
        """
        current = self._current_or_refuse(place)
        with self._db.session() as session:
            row = session.get(ChatSession, current.id)
            row.closed_at = datetime.now(timezone.utc)
        self._places.pop(place, None)
        self._release_unused({current.model_version_id})
        return current

    # -- backends ------------------------------------------------------------------------------------------
    def backend_of(self, chat: SessionRecord) -> Backend:
        """The backend answering a chat: the one chosen in the last BACKEND_FRESH_FOR seconds, else chosen now.

        Raises:
            NeedsInstall: the version is no longer installed.
            NotServed: no server runs it and it cannot be answered in this process (a LoRA, or turned off).
            ServerFailed: a LoRA adapter could not be loaded into its base model's server.
            IncompleteModel: in-process: the installed files are incomplete on disk.
            InferenceUnavailable: in-process: torch and transformers are not installed.
            ModelUnloadable: in-process: the files are there but loading them failed.
        """
        return self._held_for(chat).backend

    def _held_for(self, chat: SessionRecord, *, lease: bool = False) -> _Held:
        held = self._fresh(chat.model_version_id, lease)
        if held is not None:
            return held
        return self._choose(self.registry.get(chat.model_name), self.registry.get_version(chat.model_version_id),
                            lease)

    def _fresh(self, version_id: int, lease: bool) -> _Held | None:
        with self._backends_lock:
            held = self._backends.get(version_id)
            if held is None or time.monotonic() - held.chosen_at >= BACKEND_FRESH_FOR:
                return None
            self._backends.move_to_end(version_id)
            held.streams += lease
            return held

    def backend_for(self, model: ModelRecord, version: VersionRecord) -> Backend:
        """A running vLLM server of the version if there is one, else in-process transformers if allowed.

        Raises:
            NeedsInstall: the version is no longer installed.
            NotServed: no server runs it and it cannot be answered in this process (a LoRA, or turned off).
            ServerFailed: a LoRA adapter could not be loaded into its base model's server.
            IncompleteModel: in-process: the installed files are incomplete on disk.
            InferenceUnavailable: in-process: torch and transformers are not installed.
            ModelUnloadable: in-process: the files are there but loading them failed.
        """
        return self._choose(model, version, lease=False).backend

    def _choose(self, model: ModelRecord, version: VersionRecord, lease: bool) -> _Held:
        """Choose a version's backend; a lease counts the caller's answer in the same step (see _lease)."""
        with self._choosing:
            held = self._fresh(version.id, lease)
            if held is not None:
                return held
            if version.install_state != "installed" or not version.local_path:
                self.release(version.id)  # uninstalled since the chat began: its loaded model goes too
                raise NeedsInstall(model.name)
            route = self._route(model, version)
            server = route.server
            with self._backends_lock:
                cached = self._backends.get(version.id)
                if cached is not None and cached.server == server:
                    # The same server as before (or still none): keep its backend, whose connections or loaded model
                    # other answers may be using.
                    cached.chosen_at = time.monotonic()
                    cached.streams += lease
                    self._backends.move_to_end(version.id)
                    return cached
            if server is not None and server.endpoint:
                if route.adapter is not None:
                    server = self.servers.load_adapter(server, route.adapter, str(route.parts.adapter))
                name = route.adapter or server.served_name
                backend: Backend = BACKENDS[SERVED_BY](
                    server.endpoint, name, model_path=route.template_path, api_key=server.api_key, label=model.name,
                    context_length=_served_context(server.endpoint, server.served_name, server.api_key))
            elif not self.settings.chat_in_process:
                raise NotServed(model.name, route.why_not_served or
                                "answers in this process are turned off by MODELBAY_CHAT_IN_PROCESS")
            else:
                backend = self._in_process(model, version)
            with self._backends_lock:
                replaced = self._backends.pop(version.id, None)
                held = self._backends[version.id] = _Held(backend, server, time.monotonic(), streams=int(lease))
                evicted = self._evict()
            self._retire([h for h in (replaced, *evicted) if h is not None])
            return held

    def _route(self, model: ModelRecord, version: VersionRecord) -> _Route:
        """Which running server answers a version: its own; for a LoRA fine-tune, else its base model's, with the
        adapter hot-loaded under its own name (when the adapter's rank fits the servers' max LoRA rank); else none.

        Raises:
            BaseModelMissing: an adapter-only fine-tune's base model is not installed any more.
        """
        own = self.servers.running_for(version.id)
        parts = tuned_parts(version)
        if parts is None:
            return _Route(own, None, None, version.local_path, None)
        if own is not None or parts.adapter is None:
            return _Route(own, parts, None, str(parts.merged or version.local_path), None)
        base = self._version_or_none(version.parent_version_id)
        base_name = self._model_name(base.model_id) if base is not None else None
        if parts.merged is None and (base is None or base.install_state != "installed"):
            self.release(version.id)
            raise BaseModelMissing(model.name, base_name)
        if base is None:  # merged weights without a base: answered by them, in this process
            return _Route(None, parts, None, None, None)
        template_path = str(parts.adapter if _has_tokenizer_files(parts.adapter) else weights_folder(base) or "")
        base_server = self.servers.running_for(base.id)
        if base_server is None:
            return _Route(None, parts, None, template_path,
                          f"a LoRA fine-tune is answered by its base model's vLLM server (`/models serve {base_name}`)"
                          ", and answers in this process are turned off by MODELBAY_CHAT_IN_PROCESS")
        max_rank = self.settings.serve_max_lora_rank
        if parts.rank is not None and parts.rank > max_rank:
            return _Route(None, parts, None, template_path,
                          f"its LoRA rank {parts.rank} is above the servers' MODELBAY_SERVE_MAX_LORA_RANK "
                          f"({max_rank}), and answers in this process are turned off by MODELBAY_CHAT_IN_PROCESS")
        return _Route(base_server, parts, f"{model.name}-v{version.id}", template_path, None)

    def _in_process(self, model: ModelRecord, version: VersionRecord) -> Backend:
        """Load a version in this process: its folder; a fine-tune's merged weights, else its base with its adapter.

        Raises:
            IncompleteModel: files are missing on disk (the version's, or an adapter-only fine-tune's base's).
            BaseModelMissing: an adapter-only fine-tune's base model is not installed any more.
            InferenceUnavailable, ModelUnloadable: as TransformersBackend.
        """
        folder = Path(version.local_path)
        if version.format == "onnx":
            from modelbay.engine.installs.loadable import check_onnx

            check_onnx(folder, model.name)
            self._make_room_for_a_model()
            return BACKENDS[IN_PROCESS_ONNX](version.local_path, label=model.name)
        if version.lineage != FINETUNE:
            check_folder(folder, model.name)  # files removed since: one line, not a traceback
            self._make_room_for_a_model()
            return BACKENDS[IN_PROCESS](version.local_path, label=model.name)
        base = self._version_or_none(version.parent_version_id)
        base_name = self._model_name(base.model_id) if base is not None else None
        tuned = check_tuned(folder, model.name, base=weights_folder(base) if base is not None else None,
                            base_name=base_name)
        self._make_room_for_a_model()
        if tuned.merged is not None:
            return BACKENDS[IN_PROCESS](str(tuned.merged), label=model.name)
        assert base is not None  # check_tuned refused an adapter without its base
        return BACKENDS[IN_PROCESS](str(weights_folder(base)), label=model.name, adapter=str(tuned.adapter))

    def _version_or_none(self, version_id: int | None) -> VersionRecord | None:
        if version_id is None:
            return None
        try:
            return self.registry.get_version(version_id)
        except LookupError:
            return None

    @idempotent  # a read: repeated once if its connection drops
    def _model_name(self, model_id: int | None) -> str | None:
        with self._db.session() as session:
            return session.scalar(select(Model.name).where(Model.id == model_id)) if model_id is not None else None

    def _make_room_for_a_model(self) -> None:
        """Evict in-process backends down to one below the bound before loading another model (memory peaks)."""
        with self._backends_lock:
            evicted = self._evict_loaded(keep=self.keep_in_process - 1)
        self._retire(evicted)

    def _evict(self) -> list[_Held]:
        """Take the least recently used backends out of the cache past its bounds (call with the lock held)."""
        evicted = []
        while len(self._backends) > self.keep_backends:
            evicted.append(self._backends.popitem(last=False)[1])
        return evicted + self._evict_loaded(keep=self.keep_in_process)

    def _evict_loaded(self, keep: int) -> list[_Held]:
        """Take the least recently used in-process backends out past `keep` of them (call with the lock held)."""
        loaded = [v for v, h in self._backends.items() if h.backend.in_process]
        return [self._backends.pop(v) for v in loaded[:max(0, len(loaded) - keep)]]

    def _retire(self, held: list[_Held]) -> None:
        """Close backends no longer cached, now or when the last answer streaming through them ends."""
        for h in held:
            with self._backends_lock:
                h.retired = True
                idle = h.streams == 0
            if idle:
                _close(h.backend)

    def release(self, version_id: int) -> None:
        """Forget a version's backend and close it once no answer uses it (its chats ended, it was uninstalled)."""
        with self._backends_lock:
            held = self._backends.pop(version_id, None)
        self._retire([held] if held is not None else [])

    def release_all(self) -> None:
        """Close every cached backend (at shutdown)."""
        with self._backends_lock:
            held = list(self._backends.values())
            self._backends.clear()
        self._retire(held)

    def _release_unused(self, version_ids: set[int]) -> None:
        """Release the backends of versions that no open chat uses any more."""
        if not version_ids:
            return
        with self._db.session() as session:
            used = set(session.scalars(select(ChatSession.model_version_id).where(
                ChatSession.model_version_id.in_(version_ids), ChatSession.closed_at.is_(None))))
        for version_id in version_ids - used:
            self.release(version_id)

    def _lease(self, chat: SessionRecord) -> _Held:
        """The chat's backend, counted as in use until _unlease: evicted meanwhile, it is closed only after."""
        return self._held_for(chat, lease=True)

    def _unlease(self, held: _Held) -> None:
        with self._backends_lock:
            held.streams -= 1
            idle = held.retired and held.streams == 0
        if idle:
            _close(held.backend)

    # -- answering -----------------------------------------------------------------------------------------
    def generation(self) -> Generation:
        """The generation settings answers use."""
        s = self.settings
        return Generation(max_tokens=s.chat_max_tokens, temperature=s.chat_temperature, timeout=s.chat_timeout,
                          idle_timeout=s.chat_idle_timeout)

    def answer(self, chat: SessionRecord | int, user_key: str, text: str,
               stop: threading.Event | None = None) -> Iterator[ChatEvent]:
        """Answer one message: Notices first, then Deltas as the model writes, then Answered.

        Setting `stop` ends the answer after the piece being written: what arrived is kept, stored as canceled.
        """
        chat = chat if isinstance(chat, SessionRecord) else self.get(chat)
        # A lone surrogate (a JSON payload can carry one) is no character: no database, tokenizer or server takes it.
        text = text.encode("utf-8", "replace").decode("utf-8")
        session_id = chat.id
        try:
            held = self._lease(chat)
        except ModelBayError as exc:  # experiments: the model's own error would name it
            if chat.experiment is None:
                raise
            log.warning("experiment %s: chat %s cannot be answered: %s", chat.experiment, chat.id, exc)
            raise ExperimentModelHidden(chat.experiment) from exc
        backend = held.backend
        try:
            ticket, history = self._take_turn(session_id)
        except BaseException:
            self._unlease(held)
            raise
        try:
            messages = ([{"role": "system", "content": chat.system_prompt}] if chat.system_prompt else [])
            messages += _answered(history) + [{"role": "user", "content": text}]
            params = self.generation()
            if chat.temperature is not None or chat.max_tokens is not None:  # an experiment variant's parameters
                params = replace(params, temperature=params.temperature if chat.temperature is None
                                 else chat.temperature, max_tokens=chat.max_tokens or params.max_tokens)
            prompt = backend.prompt(messages, params)
            notices = list(prompt.notices)
            for notice in notices:
                yield Notice(notice)
            params = replace(params, max_tokens=prompt.max_tokens)
            pieces: list[str] = []
            finished: Finished | None = None
            note: str | None = None
            started = time.monotonic()
            first: float | None = None
            canceled = stop is not None and stop.is_set()
            stream = backend.stream(prompt.messages, params)
            try:
                for item in () if canceled else stream:
                    if isinstance(item, Finished):
                        finished = item
                        continue
                    if isinstance(item, Adjusted):  # e.g. a server's template found to refuse the system prompt
                        notices.append(item.text)
                        yield Notice(item.text)
                        continue
                    if first is None:
                        first = time.monotonic()
                    pieces.append(item)
                    yield Delta(item)
                    if stop is not None and stop.is_set():
                        canceled = True
                        break
            except BackendFailed as exc:
                why = str(exc) if chat.experiment is None else "the model failed"  # experiments: blinded
                note = f"The answer stopped early: {why}" if pieces else f"No answer: {why}"
                # Choose again at the next message: the server table says whether the server still runs (its
                # supervisor owns that state and marks a dead server down within seconds).
                self._forget_choice(chat.model_version_id, held)
            finally:
                stream.close()  # a canceled answer stops generating (in-process) or drops its connection (HTTP)
            ended = time.monotonic()
            answer_text = "".join(pieces)
            status = "ok" if note is None else ("partial" if pieces else "failed")
            if canceled:
                status, note = "canceled", "You stopped this answer; the text so far is kept."
            elif note is None and finished is not None and finished.reason == "length":
                note = f"The answer reached the {params.max_tokens}-token limit and was cut there."
            sent = prompt.question  # the message as the model saw it (cut to fit, maybe), without the system prompt
            record = self._store(
                chat, user_key, sent, answer_text, status, note, backend.name,
                input_tokens=(finished.input_tokens if finished else None) or prompt.tokens,
                output_tokens=finished.output_tokens if finished else (len(pieces) or None),
                ttft_ms=(first - started) * 1000 if first is not None else None,
                total_ms=(ended - started) * 1000, notices=notices,
            )
            yield Answered(record)
        finally:
            self._end_turn(session_id, ticket)
            self._unlease(held)

    # -- arena: one generation outside any chat session --------------------------------------------------------
    def generate(self, version_id: int, messages: list[dict[str, str]], stop: threading.Event | None = None,
                 on_backend: Callable[[str], None] | None = None) -> Iterator[str | Adjusted | Finished]:
        """Stream one answer of a model version to `messages` (OpenAI-style dicts): text pieces, any `Adjusted`
        notice, then `Finished`. The version's backend is chosen as for a chat and leased while it streams;
        `on_backend` is told its name (BACKENDS) once chosen, before the first piece.

        Nothing is stored (the arena keeps its own record). Setting `stop` ends it after the current piece.

        Raises:
            NeedsInstall, NotServed, ServerFailed, IncompleteModel, InferenceUnavailable, ModelUnloadable: as
                `backend_for`, before the first piece.
            BackendFailed: the backend failed or timed out while answering.
        """
        version = self.registry.get_version(version_id)
        held = self._fresh(version_id, lease=True)
        if held is None:
            held = self._choose(self.registry.get(self._model_name(version.model_id) or ""), version, lease=True)
        try:
            if on_backend is not None:
                on_backend(held.backend.name)
            params = self.generation()
            prompt = held.backend.prompt(messages, params)
            for notice in prompt.notices:
                yield Adjusted(notice)
            stream = held.backend.stream(prompt.messages, replace(params, max_tokens=prompt.max_tokens))
            try:
                for item in stream:
                    yield item
                    if stop is not None and stop.is_set():
                        break
            except BackendFailed:
                self._forget_choice(version_id, held)
                raise
            finally:
                stream.close()
        finally:
            self._unlease(held)

    def _forget_choice(self, version_id: int, held: _Held) -> None:
        """Make the next message choose its backend again (kept if still the same: a loaded model stays)."""
        with self._backends_lock:
            if self._backends.get(version_id) is held:
                held.chosen_at = float("-inf")

    def _store(self, chat: SessionRecord, user_key: str, question: str, answer: str, status: str, note: str | None,
               backend: str, *, input_tokens: int | None, output_tokens: int | None, ttft_ms: float | None,
               total_ms: float, notices: list[str]) -> AnswerRecord:
        with self._db.session() as session:
            measured = not self.analytics.opted_out(user_key, session)
            keep_text = self.settings.store_transcripts and measured
            asked = Message(session_id=chat.id, role="user", user_key=user_key, tokens=input_tokens,
                            content=question if keep_text else None)
            said = Message(session_id=chat.id, role="assistant", user_key=user_key, tokens=output_tokens,
                           content=answer if keep_text else None, status=status)
            session.add_all([asked, said])
            session.flush()
            if measured:
                self.analytics.record_answers([AnswerEvent(
                    model_version_id=chat.model_version_id, user_key=user_key, session_id=chat.id,
                    message_id=said.id, backend=backend, input_tokens=input_tokens, output_tokens=output_tokens,
                    ttft_ms=ttft_ms, total_ms=total_ms, failed=status == "failed",
                )], session=session)
                if chat.variant_id is not None:  # experiments: in the same transaction as the answer
                    self._count_answer(session, chat.variant_id, status, total_ms)
            message_id = said.id
        if measured and self.telemetry is not None:  # telemetry: counted once the answer is stored
            self.telemetry.observe_answer(chat.model_name, status, input_tokens=input_tokens,
                                          output_tokens=output_tokens, ttft_ms=ttft_ms, total_ms=total_ms)
        self._remember(chat.id, question, answer)
        return AnswerRecord(message_id, chat.id, answer, status, note, backend, input_tokens, output_tokens, ttft_ms,
                            total_ms, list(notices))

    # -- history and turn order (Redis) --------------------------------------------------------------------
    @staticmethod
    def _key(session_id: int, what: str) -> str:
        return f"modelbay:chat:{session_id}:{what}"

    def history(self, session_id: int) -> list[dict[str, str]]:
        """The turns the model will see next (kept in Redis for MODELBAY_CHAT_HISTORY_TTL)."""
        return [json.loads(item) for item in self.redis.lrange(self._key(session_id, "history"), 0, -1)]

    def _remember(self, session_id: int, question: str, answer: str) -> None:
        if not answer:  # a question without an answer is not kept: the next one would follow it as a second user turn
            return
        key = self._key(session_id, "history")
        turns = [json.dumps({"role": "user", "content": question}),
                 json.dumps({"role": "assistant", "content": answer})]
        pipe = self.redis.pipeline()
        pipe.rpush(key, *turns).ltrim(key, -HISTORY_LIMIT, -1).expire(key, self.settings.chat_history_ttl)
        pipe.execute()

    def _take_turn(self, session_id: int) -> tuple[int, list[dict[str, str]]]:
        """Take a ticket, wait until every earlier message of the session is answered, return the history then."""
        turn_key = self._key(session_id, "turn")
        # One round trip when nobody is ahead (the usual case): ticket, whose turn it is, and the history.
        ticket, turn, raw = self._turn_script(
            keys=[self._key(session_id, "ticket"), turn_key, self._key(session_id, "history")],
            args=[self.settings.chat_history_ttl])
        ticket = int(ticket)
        if int(turn) >= ticket - 1:
            return ticket, [json.loads(item) for item in raw]
        # A turn held longer than a whole answer may take belongs to a process that died: go ahead then.
        deadline = time.monotonic() + self.settings.chat_timeout + self.settings.chat_idle_timeout
        while int(self.redis.get(turn_key) or 0) < ticket - 1 and time.monotonic() < deadline:
            time.sleep(_TURN_POLL)
        return ticket, self.history(session_id)

    def _end_turn(self, session_id: int, ticket: int) -> None:
        turn_key = self._key(session_id, "turn")
        self.redis.eval(
            "local t = tonumber(redis.call('GET', KEYS[1]) or '0') "
            "if t < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) end return 1",
            1, turn_key, ticket, self.settings.chat_history_ttl,
        )

    # -- ratings -------------------------------------------------------------------------------------------
    def last_answer(self, place: Place, user_key: str) -> int | None:
        """The id of the newest answer given to this person in the chat open here.

        Raises:
            NoChatHere: no chat is open there.
        """
        current = self._current_or_refuse(place)
        with self._db.session() as session:
            return session.scalars(select(Message.id).where(
                Message.session_id == current.id, Message.role == "assistant", Message.user_key == user_key,
            ).order_by(Message.id.desc()).limit(1)).first()

    def rate(self, message_id: int | None, user_key: str, up: bool, reason: str | None = None,
             comment: str | None = None) -> RatingRecord:
        """Rate an answer given to this person 👍 or 👎 (rating again replaces the earlier rating).

        Raises:
            WrongReason: the reason belongs to the other direction.
            AnswerNotFound: there is no such answer, none yet, or it was given to someone else.
        """
        allowed = UP_REASONS if up else DOWN_REASONS
        if reason is not None and reason not in allowed:
            raise WrongReason(reason, up, allowed)
        if message_id is None:
            raise AnswerNotFound(None)
        try:
            return self._rate(message_id, user_key, up, reason, comment)
        except IntegrityError:
            # The same person's other click (a double click on 👍) inserted the rating between our lookup and our
            # insert: this one now updates it.
            return self._rate(message_id, user_key, up, reason, comment)

    @idempotent  # rating again to the same value changes nothing, the rollup included
    def _rate(self, message_id: int, user_key: str, up: bool, reason: str | None,
              comment: str | None) -> RatingRecord:
        with self._db.session() as session:
            message = session.get(Message, message_id)
            if message is None or message.role != "assistant":
                raise AnswerNotFound(message_id)
            if message.user_key != user_key:
                raise AnswerNotFound(message_id, theirs=True)
            chat = session.get(ChatSession, message.session_id)
            row = session.scalars(select(Feedback).where(Feedback.message_id == message_id,
                                                         Feedback.user_key == user_key)).first()
            before = 0 if row is None else row.rating
            if row is None:
                row = Feedback(message_id=message_id, user_key=user_key, rating=0)
                session.add(row)
            row.rating, row.reason, row.comment = (1 if up else -1), reason, (comment or None)
            after = row.rating
            if before != after:
                self.analytics.add_rating(session, chat.model_version_id, message.created_at,
                                          ups=(after == 1) - (before == 1), downs=(after == -1) - (before == -1))
                # experiments: re-rating moves the variant's totals too; opted-out people are not counted there
                if chat.variant_id is not None and not self.analytics.opted_out(user_key, session):
                    self._count_rating(session, chat.variant_id, ups=(after == 1) - (before == 1),
                                       downs=(after == -1) - (before == -1))
        return RatingRecord(message_id, up, reason, comment or None, changed=before not in (0, after))

    # -- experiments: a chat on a variant counts its answers and ratings in the variant's totals ----------------
    def _count_answer(self, session: Any, variant_id: int, status: str, total_ms: float) -> None:
        """Add an answer to its variant's totals and latency histogram, while the experiment runs.

        A stopped answer is not counted: its time is the person's, not the model's. Failed answers count as answers
        and failures, without a response time.
        """
        if status == "canceled":
            return
        v = ExperimentVariant
        failed = status == "failed"
        values: dict[str, Any] = {"answers": v.answers + 1, "failures": v.failures + int(failed)}
        if not failed:
            values.update(ms_sum=v.ms_sum + total_ms, ms_sq_sum=v.ms_sq_sum + total_ms * total_ms)
        counted = session.execute(update(v).where(v.id == variant_id, _running(v)).values(values)
                                  .execution_options(synchronize_session=False)).rowcount
        if counted and not failed:
            table = ExperimentLatency.__table__
            stmt = (sqlite if self._db.url.startswith("sqlite") else postgresql).insert(table)
            session.execute(stmt.on_conflict_do_update(index_elements=["variant_id", "bucket"],
                                                       set_={"count": table.c.count + stmt.excluded["count"]}),
                            [{"variant_id": variant_id, "bucket": latency_bucket(total_ms), "count": 1}])

    @staticmethod
    def _count_rating(session: Any, variant_id: int, ups: int, downs: int) -> None:
        """Add a rating (or the change of one) to its variant's 👍/👎 totals, while the experiment runs."""
        v = ExperimentVariant
        session.execute(update(v).where(v.id == variant_id, _running(v))
                        .values(ups=v.ups + ups, downs=v.downs + downs).execution_options(synchronize_session=False))

    # -- privacy -------------------------------------------------------------------------------------------
    def forget(self, user_key: str) -> dict[str, int]:
        """Erase a person's chats, messages, ratings and events, experiment assignments (a running variant's people
        count drops by one) and arena votes; the arena battles they started stay for other people's votes, with no
        owner and no text. Anonymous totals stay. Returns how many of each were erased, by what."""
        with self._db.session() as session:
            sessions = list(session.scalars(select(ChatSession.id).where(ChatSession.user_key == user_key)))
            counts = {
                "ratings": session.execute(delete(Feedback).where(Feedback.user_key == user_key)).rowcount,
                "events": session.execute(delete(AnalyticsEvent).where(AnalyticsEvent.user_key == user_key)).rowcount,
                "messages": session.execute(delete(Message).where(
                    (Message.user_key == user_key) | Message.session_id.in_(sessions))).rowcount,
                "chats": session.execute(delete(ChatSession).where(ChatSession.user_key == user_key)).rowcount,
            }
            # experiments: who was assigned where goes too, and leaves the running variants' people counts, so that
            # joining again counts them once; the other anonymous totals stay
            exposed = session.execute(delete(ExperimentExposure).where(ExperimentExposure.user_key == user_key)
                                      .returning(ExperimentExposure.variant_id)).scalars().all()
            for variant_id in exposed:
                v = ExperimentVariant
                session.execute(update(v).where(v.id == variant_id, _running(v), v.exposures > 0)
                                .values(exposures=v.exposures - 1).execution_options(synchronize_session=False))
            counts["experiment assignments"] = len(exposed)
            # arena: their votes go; the battles they started stay for the others' votes, anonymous and without text
            counts["arena votes"] = session.execute(delete(ArenaVote).where(ArenaVote.user_key == user_key)).rowcount
            battles = list(session.scalars(select(ArenaBattle).where(ArenaBattle.user_key == user_key)))
            for battle in battles:
                battle.user_key, battle.prompt = FORGOTTEN, None
                battle.details = {side: {key: value for key, value in (kept or {}).items() if key != "text"}
                                  for side, kept in (battle.details or {}).items()}
            counts["arena battles made anonymous"] = len(battles)
        self._places.clear()
        for session_id in sessions:
            self.redis.delete(*(self._key(session_id, what) for what in ("history", "ticket", "turn")))
        return counts


FORGOTTEN = "forgotten"  # arena: the user_key of battles whose asker erased their data


def _running(v: type[ExperimentVariant]) -> Any:
    """experiments: a variant of a running experiment (a shipped one's chats no longer count)."""
    return v.experiment_id.in_(select(Experiment.id).where(Experiment.status == "running"))


def _answered(history: list[dict[str, str]]) -> list[dict[str, str]]:
    """A stored history's question-and-answer pairs: unanswered questions and answers without a question left out."""
    pairs: list[dict[str, str]] = []
    asked: dict[str, str] | None = None
    for turn in history:
        if turn.get("role") == "user":
            asked = turn
        elif turn.get("role") == "assistant" and asked is not None:
            pairs += [asked, turn]
            asked = None
    return pairs


def _close(backend: Backend) -> None:
    try:
        backend.close()
    except Exception:  # closing is best effort: the backend is out of use either way
        log.warning("closing the %s backend failed", backend.name, exc_info=True)


def _served_context(endpoint: str, name: str, api_key: str | None = None) -> int:
    """The context length a vLLM server allows (its /v1/models lists max_model_len)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        models = httpx.get(f"{endpoint}/models", headers=headers, timeout=5.0).json().get("data", [])
        for entry in models:
            if entry.get("id") == name and entry.get("max_model_len"):
                return int(entry["max_model_len"])
    except (httpx.HTTPError, ValueError, AttributeError, TypeError):  # not the shape vLLM answers with
        pass
    return 2048
