"""Tasks and agents: the task lifecycle, correlation state, the ``tasks`` /
``task_executions`` / ``agent_status`` rows, the CSV export and the periodic report."""
