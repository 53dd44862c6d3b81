"""The operators' console: live monitoring, case search with the audit trail, actions, metrics and health."""
