"""The demo on embedded defaults and the in-process SMTP sink it (and the tests)
deliver to."""
