"""Alerts: the rules file, the alert state machine, the rule queries and the ``alerts`` table."""
