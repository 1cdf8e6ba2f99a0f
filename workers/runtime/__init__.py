"""The worker runtime every domain runs on (DESIGN §4–5): consumer.py wires it.

consume_loop.py (I/O thread) → pipeline.py (processing thread: processor.py commits a batch in one
transaction, decision.py decides each failure, outbox.py publishes what was emitted, receipts.py
records rejections) ; queries.py answers W.queries; handler.py is what a domain writes against;
health.py and metrics.py serve the probes. The ingress never imports this package.
"""
