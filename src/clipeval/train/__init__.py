"""Training loops only (the dual encoder's). Evaluation during training goes through :mod:`clipeval.eval`."""
