"""The agent workforce: providers, router, prompt caching, retrieval, sanitizer, cost ledger.

Data flows one way: a task's text and retrieved passages are sanitized, assembled behind a
stable cached prefix (`prefix.py`), sent through the router's fallback chain (`router.py`) to a
provider SDK (`providers.py`), and every attempt is priced (`prices.py`) and written to the
ledger with its budget settlement (`ledger.py`, `budgets.py`).
"""
