"""Run the system locally as real processes: private vhosts and service processes (tests, bench)."""
