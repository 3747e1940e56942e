"""The only code that runs SQL: subscribers, sends, the outbox, schedules, the secret."""
