"""The durable path: outbox, Kafka producer, sink, central store, receipts, embedded broker."""
