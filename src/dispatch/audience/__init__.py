"""People as they arrive from outside: addresses, CSV files, sign-up forms and the
signed tokens in their links. Checks and formats only; the store keeps them."""
