"""City cases (数字城管 案件): the workflow state machine, routing and the case engine."""
