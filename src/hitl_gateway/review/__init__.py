"""Review: reviewer identity, the hold life cycle, decisions over HTTP and Kafka."""
