"""Getting messages onto the wire: the delivery loop, SMTP transport, rate limits,
what each reply means for its outbox row, and the commands' send/resume decisions."""
