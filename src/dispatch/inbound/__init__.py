"""What comes back: bounces, complaints, auto-replies and mailto unsubscribes, classified
(classify), matched to the message they are about and acted on (process), received by SMTP
(server) or read from files."""
