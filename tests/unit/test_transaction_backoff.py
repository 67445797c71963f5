"""The pause before retrying a transaction the broker still finishes (CONCURRENT_TRANSACTIONS)
is the gateway's setting, not aiokafka's fixed 20 ms: checked against aiokafka's own handler,
so an aiokafka release that stops reading the constant fails here rather than silently."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import aiokafka.producer.sender as aiokafka_sender
import pytest
from aiokafka.errors import ConcurrentTransactions
from aiokafka.producer.sender import AddPartitionsToTxnHandler

from hitl_gateway.settings import KafkaSettings
from hitl_gateway.sink import tune_transaction_backoff


@pytest.fixture(autouse=True)
def _restore() -> Iterator[None]:
    before = aiokafka_sender.BACKOFF_OVERRIDE
    yield
    aiokafka_sender.BACKOFF_OVERRIDE = before


def _retry_after_concurrent_transactions() -> float:
    sender = SimpleNamespace(_retry_backoff=0.1, _txn_manager=SimpleNamespace(txn_partitions=set()))
    handler = AddPartitionsToTxnHandler(sender, [])
    response = SimpleNamespace(errors=[("outputs", [(0, ConcurrentTransactions.errno)])])
    backoff: float = handler.handle_response(response)
    return backoff


def test_the_retry_pause_is_the_setting() -> None:
    tune_transaction_backoff(KafkaSettings().concurrent_transactions_backoff_ms)
    assert _retry_after_concurrent_transactions() == pytest.approx(0.002)
    tune_transaction_backoff(7)
    assert _retry_after_concurrent_transactions() == pytest.approx(0.007)


def test_the_setting_is_bounded() -> None:
    with pytest.raises(ValueError, match="concurrent_transactions_backoff_ms"):
        KafkaSettings(concurrent_transactions_backoff_ms=0)
