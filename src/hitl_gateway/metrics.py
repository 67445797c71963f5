"""Every metric the gateway exports, in one place, on an injectable registry.

Labels are bounded (routes, reasons, outcomes): never record ids or free text.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from hitl_gateway import __version__
from hitl_gateway.models import DeadLetterReason

_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.records_consumed = Counter(
            "hitl_records_consumed", "Input records read and committed.", registry=r
        )
        self.records_routed = Counter(
            "hitl_records_routed",
            "Input records routed, by policy domain and route ('-' for invalid records).",
            ["domain", "route"],
            registry=r,
        )
        self.review_tasks = Counter(
            "hitl_review_tasks",
            "Review tasks published for new items (held or deliver-and-review), by pool.",
            ["pool"],
            registry=r,
        )
        self.stop_switch = Gauge(
            "hitl_stop_switch",
            "1 while the stop switch of a domain ('*': all) is on in a partition this instance"
            " owns: its records are held for review instead of passing.",
            ["domain"], registry=r,
        )  # fmt: skip
        # Backlog and capacity: sampled from the shared hold index (every instance reports
        # the same global values: aggregate with max(), not sum()).
        self.holds = Gauge(
            "hitl_holds", "Items waiting for review, by pool and whether they block delivery.",
            ["pool"], registry=r,
        )  # fmt: skip
        self.oldest_hold_age = Gauge(
            "hitl_oldest_hold_age_seconds", "Age of the oldest item waiting, by pool.",
            ["pool"], registry=r,
        )  # fmt: skip
        self.holds_past_sla = Gauge(
            "hitl_holds_past_sla", "Items waiting past their SLA deadline, by pool.",
            ["pool"], registry=r,
        )  # fmt: skip
        self.backlog_seconds = Gauge(
            "hitl_review_backlog_seconds",
            "Reviewer-seconds needed to clear the waiting items, by pool (items / cases per hour).",
            ["pool"], registry=r,
        )  # fmt: skip
        self.pool_capacity_seconds = Gauge(
            "hitl_pool_capacity_seconds", "Reviewer-seconds a pool has per week (pools.yaml).",
            ["pool"], registry=r,
        )  # fmt: skip
        self.pool_cases_per_hour = Gauge(
            "hitl_pool_cases_per_hour", "Cases one reviewer completes per hour (pools.yaml).",
            ["pool"], registry=r,
        )  # fmt: skip
        self.pool_cost_per_hour = Gauge(
            "hitl_pool_cost_per_hour_usd", "Cost of one reviewer-hour (pools.yaml).",
            ["pool"], registry=r,
        )  # fmt: skip
        # Kafka progress, per owned input partition (bounded by the partition count).
        self.consumer_lag = Gauge(
            "hitl_consumer_lag_records",
            "Committed records not yet processed (last stable offset minus position).",
            ["topic", "partition"], registry=r,
        )  # fmt: skip
        self.lso_lag = Gauge(
            "hitl_last_stable_offset_lag_records",
            "High watermark minus last stable offset: grows while a transaction hangs open.",
            ["topic", "partition"], registry=r,
        )  # fmt: skip
        self.last_commit_age = Gauge(
            "hitl_last_commit_age_seconds", "Seconds since this instance last committed a batch.",
            registry=r,
        )  # fmt: skip
        self.policy_info = Gauge(
            "hitl_policy_info",
            "The policy set in force (value 1), by version.",
            ["version"],
            registry=r,
        )
        self.policy_reloads = Counter(
            "hitl_policy_reloads",
            "Policy reload attempts, by outcome (success or failure).",
            ["outcome"],
            registry=r,
        )
        self.records_delivered = Counter(
            "hitl_records_delivered", "Records released to the delivered topic.", registry=r
        )
        self.records_dead_lettered = Counter(
            "hitl_records_dead_lettered",
            "Invalid input records sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=r,
        )
        self.transactions = Counter(
            "hitl_kafka_transactions",
            "Kafka transactions finished, by outcome (commit or abort).",
            ["outcome"],
            registry=r,
        )
        self.batch_records = Histogram(
            "hitl_batch_records",
            "Records per committed partition batch.",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "hitl_batch_processing_seconds",
            "Time from a partition batch's oldest record being fetched to its commit.",
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.end_to_end_seconds = Histogram(
            "hitl_end_to_end_latency_seconds",
            "From the input record's timestamp to its delivery committing (routed deliveries).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
            registry=r,
        )
        self.holds_by_domain = Gauge(
            "hitl_holds_by_domain", "Items waiting for review, by domain.", ["domain"], registry=r
        )
        self.assigned_partitions = Gauge(
            "hitl_assigned_partitions", "Input partitions this instance owns.", registry=r
        )
        self.infrastructure_errors = Counter(
            "hitl_infrastructure_errors",
            "Kafka or Redis failures that were retried, by component.",
            ["component"],
            registry=r,
        )
        self._oidc(r)
        self.kafka_client_retries = Counter(
            "hitl_kafka_client_retries",
            "Retries the Kafka client reported and expected (coordinator loading or moving,"
            " a transactional produce not yet verified, a rebalance), by error.",
            ["error"],
            registry=r,
        )
        self.decisions = Counter(
            "hitl_decisions",
            "Reviewer decisions applied, by pool, verdict and status (applied or recorded).",
            ["pool", "verdict", "status"],
            registry=r,
        )
        self.decisions_refused = Counter(
            "hitl_decisions_refused",
            "Decisions refused, by reason.",
            ["reason"],
            registry=r,
        )
        self.review_latency = Histogram(
            "hitl_review_latency_seconds",
            "Time from hold to the decision that closed it, by pool and verdict.",
            ["pool", "verdict"],
            buckets=(
                60,
                300,
                900,
                1_800,
                3_600,
                4 * 3_600,
                8 * 3_600,
                86_400,
                3 * 86_400,
                7 * 86_400,
            ),
            registry=r,
        )
        self.sla_breaches = Counter(
            "hitl_sla_breaches",
            "Holds found past their SLA deadline, by pool.",
            ["pool"],
            registry=r,
        )
        self.escalations = Counter(
            "hitl_escalations",
            "Holds moved along their escalation chain, by the pool they moved to.",
            ["pool"],
            registry=r,
        )
        self.sla_warnings = Counter(
            "hitl_sla_warnings",
            "Holds that reached the warning share of their SLA (HITL_NOTIFY__SLA_WARNING_SHARE), "
            "by pool.",
            ["pool"],
            registry=r,
        )
        self.fallback_routed = Counter(
            "hitl_fallback_routed",
            "Items held in a fallback pool because no pool speaks their language, by domain and "
            "fallback pool.",
            ["domain", "pool"],
            registry=r,
        )
        self.holds_moved = Counter(
            "hitl_holds_moved",
            "Holds moved to another pool by the re-router (reroute: a pool now serves them) or "
            "an operator (reassign), by kind and the pool they moved to.",
            ["kind", "pool"],
            registry=r,
        )
        self.notifications = Counter(
            "hitl_notifications",
            "Webhook alerts (escalation, sla_warning) by outcome: sent, failed, dropped "
            "(queue full or stopping), disabled (no webhook set), duplicate (key seen before).",
            ["kind", "outcome"],
            registry=r,
        )
        self.notification_attempts = Counter(
            "hitl_notification_attempts",
            "HTTP requests made to deliver webhook alerts, retries included, by kind.",
            ["kind"],
            registry=r,
        )
        self._calibration(r)
        self._automation_bias(r)
        self.build = Info("hitl_build", "Gateway build information.", registry=r)
        self.build.info({"version": __version__})
        # Publish every bounded label value at zero so rate() and alerts see the series at once.
        for outcome in ("success", "failure"):
            self.policy_reloads.labels(outcome=outcome)
        for reason in DeadLetterReason:
            self.records_dead_lettered.labels(reason=reason.value)
        for outcome in ("commit", "abort"):
            self.transactions.labels(outcome=outcome)
        for kind in ("recalibrate", "calibration_restored", "reviewer_flagged", "reviewer_cleared"):
            self.calibration_events.labels(type=kind)
        for kind in ("escalation", "sla_warning"):
            self.notification_attempts.labels(kind=kind)
            for outcome in ("sent", "failed", "dropped", "disabled", "duplicate"):
                self.notifications.labels(kind=kind, outcome=outcome)

    def _oidc(self, r: CollectorRegistry) -> None:
        """Who may use the review API: the reviewers file, its request limit, and reviewers
        signed in by the OpenID Connect issuer (review/oidc.py)."""
        self.reviewer_reloads = Counter(
            "hitl_reviewers_reloads",
            "Reloads of the reviewers file, by outcome (failure: the old reviewers stay).",
            ["outcome"],
            registry=r,
        )
        self.api_requests_limited = Counter(
            "hitl_api_requests_limited",
            "API requests refused with 429: the reviewer was over the rate limit.",
            registry=r,
        )
        self.oidc_groups_reloads = Counter(
            "hitl_oidc_groups_reloads",
            "Reloads of the OIDC groups file, by outcome (failure: the old groups stay).",
            ["outcome"],
            registry=r,
        )
        self.oidc_tokens = Counter(
            "hitl_oidc_tokens",
            "OIDC tokens verified, by outcome (accepted, or why refused: expired, audience,"
            " issuer, signature, unknown_key, algorithm, not_yet_valid, claims, nonce,"
            " malformed).",
            ["outcome"],
            registry=r,
        )
        self.oidc_jwks_fetches = Counter(
            "hitl_oidc_jwks_fetches",
            "Fetches of the OIDC issuer's key set, by outcome (failure: the keys in hand stay).",
            ["outcome"],
            registry=r,
        )
        for outcome in ("success", "failure"):
            self.oidc_jwks_fetches.labels(outcome=outcome)

    def _automation_bias(self, r: CollectorRegistry) -> None:
        """How long reviewers look at what they decide (the EU AI Act asks overseers to stay
        aware of automation bias: approving what the model says without reading it)."""
        self.time_on_item = Histogram(
            "hitl_review_time_on_item_seconds",
            "Seconds from taking an item (its lease) to deciding it, by pool, rubric and verdict.",
            ["pool", "rubric", "verdict"],
            buckets=(2, 5, 10, 15, 30, 60, 120, 300, 600, 1_800, 3_600),
            registry=r,
        )
        self.rubric_min_review_seconds = Gauge(
            "hitl_rubric_min_review_seconds",
            "The rubric's min_review_seconds (routing.yaml): a median below it alerts.",
            ["rubric"],
            registry=r,
        )

    def observe_time_on_item(
        self, pool: str, rubric: str | None, verdict: str, seconds: float
    ) -> None:
        self.time_on_item.labels(pool=pool, rubric=rubric or "-", verdict=verdict).observe(
            max(0.0, seconds)
        )

    def _calibration(self, r: CollectorRegistry) -> None:
        """Judge and reviewer agreement, sampled from the shared windows in Redis by every
        instance (use max(), not sum(), across instances)."""
        judge = ["domain", "stratum"]
        self.judge_agreement = Gauge(
            "hitl_judge_agreement_ratio",
            "Judge-human agreement on blind reviews over the rolling window (absent while "
            "there are fewer cases than the policy's minimum).",
            judge,
            registry=r,
        )
        self.judge_agreement_low = Gauge(
            "hitl_judge_agreement_lower_bound",
            "Lower end of the 95% Wilson interval of judge-human agreement.",
            judge,
            registry=r,
        )
        self.judge_agreement_high = Gauge(
            "hitl_judge_agreement_upper_bound",
            "Upper end of the 95% Wilson interval of judge-human agreement.",
            judge,
            registry=r,
        )
        self.judge_kappa = Gauge(
            "hitl_judge_kappa", "Cohen's kappa, judge vs human, over the window.", judge, registry=r
        )
        self.judge_cases = Gauge(
            "hitl_judge_cases", "Blind comparisons in the window behind the figures.", judge,
            registry=r,
        )  # fmt: skip
        self.judge_status = Gauge(
            "hitl_judge_calibration_status",
            "1 for the judge's current calibration status (insufficient_data, calibrated, "
            "recalibrate), 0 for the others.",
            [*judge, "status"],
            registry=r,
        )
        self.calibration_events = Counter(
            "hitl_calibration_events",
            "Calibration events published (recalibrate, calibration_restored, "
            "reviewer_flagged, reviewer_cleared).",
            ["type"],
            registry=r,
        )
        self.reviewer_alpha = Gauge(
            "hitl_reviewer_alpha",
            "Krippendorff's alpha among reviewers of the same items, by pool, rubric and "
            "dimension (verdict, grade, each rubric grade).",
            ["pool", "rubric", "dimension"],
            registry=r,
        )
        self.reviewer_alpha_items = Gauge(
            "hitl_reviewer_alpha_items",
            "Items with two or more ratings behind hitl_reviewer_alpha.",
            ["pool", "rubric", "dimension"],
            registry=r,
        )
        self.reviewer_alpha_excluded = Gauge(
            "hitl_reviewer_alpha_excluded_ratings",
            "Ratings left out of an ordinal hitl_reviewer_alpha: not one of the grades "
            "routing.yaml declares for the rubric.",
            ["pool", "rubric", "dimension"],
            registry=r,
        )
        self.reviewer_alpha_target = Gauge(
            "hitl_reviewer_alpha_target",
            "The pool's agreement_target (pools.yaml): alpha below it alerts.",
            ["pool"],
            registry=r,
        )
        self.reviewer_alpha_min_items = Gauge(
            "hitl_reviewer_alpha_min_items",
            "The pool's agreement_min_items (pools.yaml): items behind alpha before it is judged.",
            ["pool"],
            registry=r,
        )
        self.reviewer_consensus = Gauge(
            "hitl_reviewer_consensus_agreement_ratio",
            "How often a reviewer agrees with the consensus of multi-reviewer items.",
            ["pool", "reviewer"],
            registry=r,
        )
        self.reviewer_flagged = Gauge(
            "hitl_reviewer_flagged",
            "1 when a reviewer's agreement with consensus is below the policy's threshold.",
            ["pool", "reviewer"],
            registry=r,
        )
        self.reviewer_gold_accuracy = Gauge(
            "hitl_reviewer_gold_accuracy_ratio",
            "Share of gold (known-answer) items a reviewer decided right, over the window.",
            ["pool", "reviewer"],
            registry=r,
        )
        self.reviewer_gold_items = Gauge(
            "hitl_reviewer_gold_items",
            "Gold items behind hitl_reviewer_gold_accuracy_ratio.",
            ["pool", "reviewer"],
            registry=r,
        )

    def set_policy_version(self, version: str) -> None:
        self.policy_info.clear()
        self.policy_info.labels(version=version).set(1)
