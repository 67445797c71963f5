"""Composition root: builds the parts, owns start/stop and signals. No per-record logic here.

Lifecycle: signal -> stop event -> stop fetching -> finish the in-flight batch -> commit ->
close in reverse order of start. A second signal, or a drain past the budget, exits at once:
transactions make a hard exit safe (uncommitted work is aborted and re-read).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import CollectorRegistry

from hitl_gateway import __version__
from hitl_gateway.audit_keys import sealing
from hitl_gateway.budgets import RedisBudgets
from hitl_gateway.calibration.store import CalibrationStore
from hitl_gateway.errors import EXIT_CONFIG, EXIT_FAILURE, ConfigError, KafkaAccessError
from hitl_gateway.holds import HoldIndex
from hitl_gateway.ids import HeldIds
from hitl_gateway.kafka_access import check_access
from hitl_gateway.logs import count_expected_retries
from hitl_gateway.metrics import GatewayMetrics
from hitl_gateway.notify import Notifier
from hitl_gateway.observe import Observer
from hitl_gateway.pipeline import Pipeline
from hitl_gateway.policy.store import PolicyStore
from hitl_gateway.redis_client import redis_client
from hitl_gateway.review.api import review_router
from hitl_gateway.review.applier import DecisionApplier
from hitl_gateway.review.auth import Reviewers
from hitl_gateway.review.groups import GroupMap
from hitl_gateway.review.identities import Identities, Oidc
from hitl_gateway.review.issuer import Issuer
from hitl_gateway.review.lease_api import lease_router
from hitl_gateway.review.leases import Leases
from hitl_gateway.review.limits import RequestLimiter
from hitl_gateway.review.oidc import Verifier
from hitl_gateway.review.oidc_records import OidcRecords
from hitl_gateway.review.operations_api import operations_router
from hitl_gateway.review.reviewer_file import FileWatcher, groups_watcher, reviewers_watcher
from hitl_gateway.review.signatures import DecisionSignatures, Nonces
from hitl_gateway.review.signing import gateway_signer, load_keys
from hitl_gateway.review.sla import SlaSweeper
from hitl_gateway.review.submit import Reviewing
from hitl_gateway.review.work import WorkLog
from hitl_gateway.routing import Router
from hitl_gateway.server import HttpServer, build_app
from hitl_gateway.settings import Settings
from hitl_gateway.sink import Publisher
from hitl_gateway.workspace.oidc_flow import CodeFlow
from hitl_gateway.workspace.pages import Workspace
from hitl_gateway.workspace.sessions import Sessions

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = structlog.get_logger(__name__)

FORCED_EXIT_CODE = 70


class Gateway:
    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.metrics = GatewayMetrics(registry)
        self.policies = PolicyStore(settings.policy, self.metrics)  # invalid files: fail fast
        # One Redis client (one connection pool) for every Redis wrapper.
        self.redis = redis_client(settings.redis)
        self.budgets = RedisBudgets(settings.redis, self.redis)
        self.index = HoldIndex(settings.redis, self.redis)
        self.ids = HeldIds(settings.redis, self.redis)
        self.reviewers = Reviewers.load(settings.review.reviewers_file)
        self.oidc = _oidc(settings, self.redis, self.metrics)  # an invalid groups file: fail
        self.identities = Identities(self.reviewers, self.oidc)
        self.calibration = CalibrationStore(settings.redis, self.redis)
        self.signatures = _signatures(settings, self.redis)  # an invalid keys file: fail
        applier = DecisionApplier(
            settings.topics,
            self.index,
            self.identities,
            self.policies,
            self.calibration,
            max_record_bytes=settings.limits.max_record_bytes,
            reassign_chunk=settings.review.reassign_chunk,
            signatures=self.signatures,
        )
        self.pipeline = Pipeline(
            settings,
            self.metrics,
            self.policies,
            Router(settings, self.budgets, self.ids),
            applier,
            index=self.index,
            sealing=sealing(settings.audit),  # the keys file is read here: fail fast
        )
        self.observer = Observer(
            self.metrics,
            self.index,
            self.calibration,
            self.policies,
            self.pipeline,
            interval_s=settings.runtime.metrics_interval_s,
            stall_after_s=settings.runtime.stall_after_s,
        )
        self.publisher = Publisher(settings.kafka, settings.limits.max_record_bytes)
        self.notifier = Notifier(settings.notify, self.metrics)
        self.sla = SlaSweeper(
            settings.topics,
            self.index,
            self.policies,
            self.metrics,
            settings.review.sla_check_interval_s,
            notifier=self.notifier,
            warn_share=settings.notify.sla_warning_share,
        )
        self.leases = Leases(settings.redis, settings.review.lease_s, client=self.redis)
        review = settings.review
        self.reviewer_file = reviewers_watcher(
            review.reviewers_file, self.reviewers, self.metrics, review.reload_interval_s
        )
        self.groups_file: FileWatcher[GroupMap] | None = None
        if self.oidc is not None:
            assert settings.oidc.groups_file is not None
            self.groups_file = groups_watcher(settings.oidc.groups_file, self.oidc.groups,
                                              self.metrics, review.reload_interval_s)  # fmt: skip
        limiter = RequestLimiter(settings.redis, review.rate_limit_requests,
                                 review.rate_limit_window_s, self.redis, self.metrics)  # fmt: skip
        self.reviewing = Reviewing(
            settings=settings,
            index=self.index,
            publisher=self.publisher,
            leases=self.leases,
            work=WorkLog(settings.redis, client=self.redis),
            metrics=self.metrics,
            limiter=limiter,
            identities=self.identities,
            signatures=self.signatures,
        )
        self.http: HttpServer | None = None
        if settings.http.enabled:
            api = review_router(self.reviewing, self.identities)
            leases = lease_router(self.reviewing, self.identities, self.policies)
            sessions = Sessions(settings.redis, client=self.redis)
            code_flow = None
            if self.oidc is not None and settings.oidc.code_flow:
                code_flow = CodeFlow(settings.oidc, self.oidc.verifier.issuer,
                                     self.oidc.verifier, sessions)  # fmt: skip
            pages = Workspace(
                self.reviewing, self.identities, self.policies, sessions, code_flow
            ).router()
            ops = operations_router(
                settings,
                self.index,
                self.policies,
                self.publisher,
                identities=self.identities,
                limiter=limiter,
            )
            # A decision carrying an edit of a maximum-size record, with room for its other
            # fields (grades, notes), is the largest body worth reading.
            max_body = settings.limits.max_record_bytes + 64 * 1024
            routers = [api, leases, ops, pages]
            app = build_app(self.metrics.registry, self.ready, routers, max_body_bytes=max_body)
            self.http = HttpServer(settings.http, app)
        self._stop = asyncio.Event()
        self._running = False
        self._watchdog: asyncio.Task[None] | None = None

    def ready(self) -> bool:
        """Serving: running and not stopping, joined to the group (owning no partition is
        fine: a group can have more instances than partitions), a broker and Redis
        answering, and not stalled."""
        return (
            self._running
            and not self._stop.is_set()
            and self.pipeline.joined
            and self.observer.kafka_ok
            and self.observer.redis_ok
            and not self.observer.stalled
        )

    def request_stop(self) -> None:
        if not self._stop.is_set():
            log.info("stop_requested")
            self._stop.set()

    async def run(
        self,
        *,
        max_records: int | None = None,
        idle_timeout_s: float | None = None,
        handle_signals: bool = False,
    ) -> None:
        """Run until stopped. ``handle_signals`` is for the CLI process only: it installs
        SIGTERM/SIGINT handlers and may hard-exit when the drain overruns its budget."""
        loop = asyncio.get_running_loop()
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_signal, sig)
            loop.add_signal_handler(signal.SIGHUP, self.policies.reload)
        log.info("gateway_starting", version=__version__, input_topic=self.settings.topics.outputs)
        try:
            async with AsyncExitStack() as stack:
                try:
                    await self._open(stack)
                    self._running = True
                    await self.pipeline.run(
                        self._stop, max_records=max_records, idle_timeout_s=idle_timeout_s
                    )
                except Exception as exc:
                    # A refusal (at start or by a lane) or a bug: named now, before closing,
                    # and the close must fit the budget too (a client's close may never end).
                    self._running = False  # /readyz: not ready while it closes
                    failure = self._refusal(exc) if isinstance(exc, KafkaAccessError) else exc
                    if handle_signals:
                        self._arm_watchdog(failure)
                    if failure is exc:
                        raise
                    raise failure from exc
                self._running = False
                if handle_signals:
                    self._arm_watchdog()  # closing must fit the budget too
            log.info("gateway_stopped", committed_records=self.pipeline.committed_records)
        finally:
            self._running = False
            if self._watchdog is not None:
                self._watchdog.cancel()
            if handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    loop.remove_signal_handler(sig)

    async def _open(self, stack: AsyncExitStack) -> None:
        """Start the clients, the HTTP server and the pipeline, each closed by ``stack``."""
        retries = self.metrics.kafka_client_retries
        stack.callback(count_expected_retries(lambda e: retries.labels(e).inc()))
        # A refused certificate, credential, token or ACL stops the start here,
        # named, instead of surfacing as clients that cannot bootstrap or retry.
        await check_access(self.settings)
        await self.publisher.start()
        stack.push_async_callback(self.publisher.stop)
        await self.notifier.start()
        stack.push_async_callback(self.notifier.stop)
        if self.http is not None:
            await self.http.start()
            stack.push_async_callback(self.http.stop)
        stack.push_async_callback(self.redis.aclose)
        await self.pipeline.start()
        stack.push_async_callback(self.pipeline.stop)
        self._background(stack)

    def _background(self, stack: AsyncExitStack) -> None:
        """The tasks beside the pipeline (watchers, observer, SLA sweeper), cancelled when
        ``stack`` closes."""

        def spawn(coro: Coroutine[Any, Any, None], name: str) -> None:
            stack.push_async_callback(_cancel, asyncio.create_task(coro, name=name))

        spawn(self.policies.watch(self._stop), "policy-watch")
        spawn(self.reviewer_file.watch(self._stop), "reviewers-watch")
        if self.oidc is not None and self.groups_file is not None:
            stack.push_async_callback(self.oidc.verifier.issuer.stop)
            spawn(self.groups_file.watch(self._stop), "oidc-groups-watch")
            spawn(self.oidc.verifier.issuer.warm(), "oidc-warm")
        spawn(self.observer.run(self._stop), "observer")
        spawn(self.sla.run(self.pipeline, self._stop), "sla-sweeper")

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._stop.is_set():
            log.warning("forced_exit", signal=sig.name)
            os._exit(FORCED_EXIT_CODE)
        log.info("signal_received", signal=sig.name)
        self.request_stop()
        self._arm_watchdog()

    def _arm_watchdog(self, failure: Exception | None = None) -> None:
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().create_task(self._drain_watchdog(failure))

    def _refusal(self, exc: KafkaAccessError) -> KafkaAccessError:
        """The refusal named with this client's identity, and logged."""
        refused = exc.naming(self.settings.kafka.identity())
        log.error("kafka_access_refused", cause=refused.cause, error=str(refused))
        return refused

    async def _drain_watchdog(self, failure: Exception | None) -> None:
        """Past the budget: name what the stop waits on and end the process. A stop for a
        failure ends as the CLI would have ended it (the cause on stderr; exit code 2 for a
        configuration error such as a refused ACL, 1 otherwise), not as an overrun drain."""
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(self.settings.runtime.shutdown_timeout_s)
            log.error("shutdown_budget_exceeded", budget_s=self.settings.runtime.shutdown_timeout_s,
                      waiting_on=waiting_on())  # fmt: skip
            if failure is None:
                os._exit(FORCED_EXIT_CODE)
            if isinstance(failure, ConfigError):
                print(f"hitl-gateway: {failure}", file=sys.stderr, flush=True)
                os._exit(EXIT_CONFIG)
            log.error("gateway_failed", error=repr(failure))
            os._exit(EXIT_FAILURE)


def waiting_on() -> list[str]:
    """Where every other unfinished task waits, outermost call first: what a stop that
    overran its budget is stuck on (a Kafka client's close, a Redis call, a hook)."""
    out: list[str] = []
    for task in asyncio.all_tasks():
        if task is asyncio.current_task():
            continue
        calls: list[str] = []
        awaited: Any = task.get_coro()
        while awaited is not None and len(calls) < 40:
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
            if frame is not None:
                where = f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"
                calls.append(f"{frame.f_code.co_qualname} ({where})")
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
        out.append(f"{task.get_name()}: {' > '.join(calls) or '?'}")
    return sorted(out)


def _signatures(settings: Settings, redis: Redis) -> DecisionSignatures | None:
    """The decision signature check when ``HITL_DECISIONS__KEYS_FILE`` is set (read now)."""
    d = settings.decisions
    if d.keys_file is None:
        log.warning(
            "decision_signing_off",
            detail="decisions on the decisions topic are applied without a signature check;"
            " set HITL_DECISIONS__KEYS_FILE (docs/security.md)",
        )
        return None
    assert d.gateway_key_id is not None  # settings require it with a keys file
    keys = load_keys(d.keys_file)
    return DecisionSignatures(d, keys, gateway_signer(keys, d.gateway_key_id),
                              Nonces(settings.redis, redis))  # fmt: skip


def _oidc(settings: Settings, redis: Redis, metrics: GatewayMetrics) -> Oidc | None:
    """The OIDC parts when ``HITL_OIDC__ISSUER`` is set (the groups file read now)."""
    oidc = settings.oidc
    if not oidc.enabled:
        return None
    assert oidc.groups_file is not None
    groups = GroupMap.load(oidc.groups_file)
    verifier = Verifier(oidc, Issuer(oidc, metrics=metrics), metrics=metrics)
    return Oidc(oidc, verifier, groups, OidcRecords(settings.redis, redis))


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
