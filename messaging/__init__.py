"""What the three services share: event contracts, broker topology, settings and pika plumbing."""
