"""Operator tools that look across the services' stores."""
