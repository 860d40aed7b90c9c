"""One typed operation per mutation: base.py (Operation, Outcome, Delta), core.py, l3.py."""
