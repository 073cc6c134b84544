"""OrderService: accepts orders over HTTP, answers 202, and tracks each order to its final status."""
